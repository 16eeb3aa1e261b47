# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""On-host records: the layout of state_dir and run_dir, atomic JSON writes, per-VM locks.

Layout (defaults):
  <state_dir>/vms/<name>/vm.json     the record (desired spec + generated identity)
  <state_dir>/vms/<name>/ch.log      the VMM's stdout/stderr
  <state_dir>/vms/<name>/serial.log  the guest's serial console (when mode is file)
  <run_dir>/<name>.sock|.pid|.lock   API socket, pid file, lock file
No Ansible imports here.
"""


import errno
import fcntl
import hashlib
import json
import os
import re
import tempfile
import time

from ansible_collections.cloudhv.ch.plugins.module_utils import vm_record
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import (
    BusyError,
    HostError,
    OptionError,
    StateError,
)
from ansible_collections.cloudhv.ch.plugins.module_utils.fsutil import fsync_dir

NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$')
NAME_RULE = "1-48 characters from [A-Za-z0-9_-], starting with a letter or digit"
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


def state_dir_tag(state_dir):
    """8 hex digits naming ``state_dir`` on this host: the start of the sha256 of its real path (so a
    symlink or a trailing slash does not make another one). Host-wide names of a VM (its systemd units)
    carry it, so that VMs of the same name in two state_dirs do not clash."""
    return hashlib.sha256(os.path.realpath(state_dir).encode('utf-8', 'surrogateescape')).hexdigest()[:8]


def check_name(name, option='name'):
    """Validate a VM or snapshot name; names become path components, so be strict."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise OptionError(option, "%r is not a valid name (%s)" % (name, NAME_RULE))
    return name


def write_json_atomic(path, data, mode=0o600):
    """Write JSON so that readers see either the old or the new file, never a partial one:
    temp file in the same directory, fsync, rename, fsync of the directory. An OS error (a full
    disk) leaves the old file as it was and raises HostError naming the file."""
    directory = os.path.dirname(path) or '.'
    try:
        fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), suffix='.tmp', dir=directory)
    except (OSError, IOError) as exc:
        raise _write_error(path, exc)
    try:
        with os.fdopen(fd, 'w') as handle:
            os.fchmod(handle.fileno(), mode)
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write('\n')
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, (OSError, IOError)):
            raise _write_error(path, exc)
        raise
    fsync_dir(directory)


def _write_error(path, exc):
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return HostError("cannot write %s: %s%s" % (path, exc.strerror or exc,
                                                " (the file system is full); the previous version of the "
                                                "file is unchanged" if full else ""), path=path)


def read_text(path):
    """A small file's text (under /proc, /sys, /etc), or None if it cannot be read."""
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, IOError) as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise StateError("cannot read %s: %s" % (path, exc))
    except ValueError as exc:
        raise StateError("record %s is not valid JSON (%s); it was not written by this "
                         "collection or was edited by hand" % (path, exc))


def ensure_dir(path, mode=0o700):
    """Create a private directory (and parents) if missing; return the path.

    Safe against a concurrent run creating the same directory between the check and the mkdir
    (ten runs on ten new VMs all create state_dir at once): that is not an error."""
    if not os.path.isdir(path):
        try:
            os.makedirs(path, mode)
        except OSError as exc:
            if exc.errno != errno.EEXIST or not os.path.isdir(path):
                raise
            return path     # another run made it (and set its mode)
        os.chmod(path, mode)
    return path


class Layout:
    """Where everything of one host lives."""

    def __init__(self, state_dir, run_dir):
        self.state_dir = os.path.abspath(state_dir)
        self.run_dir = os.path.abspath(run_dir)

    @property
    def vms_dir(self):
        return os.path.join(self.state_dir, 'vms')

    def vm_dir(self, name):
        return os.path.join(self.vms_dir, check_name(name))

    def record_path(self, name):
        return os.path.join(self.vm_dir(name), 'vm.json')

    def socket_path(self, name):
        return os.path.join(self.run_dir, '%s.sock' % check_name(name))

    def pid_path(self, name):
        return os.path.join(self.run_dir, '%s.pid' % check_name(name))

    def lock_path(self, name):
        return os.path.join(self.run_dir, '%s.lock' % check_name(name))

    def log_path(self, name):
        return os.path.join(self.vm_dir(name), 'ch.log')

    def serial_path(self, name):
        return os.path.join(self.vm_dir(name), 'serial.log')

    def snapshots_dir(self, name):
        return os.path.join(self.vm_dir(name), 'snapshots')

    def check_socket_path(self, name, option='run_dir'):
        path = self.socket_path(name)
        if len(path.encode('utf-8')) > MAX_SOCKET_PATH:
            raise OptionError(option, "the API socket path %s is %d bytes long; unix socket paths "
                              "must stay under 108 bytes: choose a shorter run_dir or VM name"
                              % (path, len(path.encode('utf-8'))))
        return path

    def ensure_dirs(self, name=None):
        ensure_dir(self.run_dir)
        ensure_dir(self.state_dir)      # itself 0700 when we create it, not only vms/ below it
        ensure_dir(self.vms_dir)
        if name is not None:
            ensure_dir(self.vm_dir(name))

    def list_vms(self):
        """Names of the VMs with a record, sorted."""
        try:
            entries = os.listdir(self.vms_dir)
        except OSError:
            return []
        return sorted(e for e in entries
                      if NAME_RE.match(e) and os.path.isfile(os.path.join(self.vms_dir, e, 'vm.json')))

    def read_record(self, name):
        """The VM's record in the current shape (vm_record.upgrade), None when it has none;
        RecordUnreadable when it cannot be used."""
        path = self.record_path(name)
        try:
            record = read_json(path)
        except StateError as exc:
            raise vm_record.unreadable(exc.msg, name, path)
        return vm_record.upgrade(record, name=name, path=path)

    def write_record(self, name, record):
        """Write the record, stamped with this release's record_version and the VM's name."""
        write_json_atomic(self.record_path(name), vm_record.stamp(record, name))


class VmLock:
    """Exclusive per-VM flock with a bounded wait; raises BusyError when it times out.

    Re-entrant within one process is not needed: each module run takes the lock once.
    """

    def __init__(self, layout, name, timeout=60.0, poll=0.05):
        self.path = layout.lock_path(name)
        self.name = name
        self.timeout = timeout
        self.poll = poll
        self.fd = None

    def acquire(self):
        ensure_dir(os.path.dirname(self.path))
        deadline = time.monotonic() + self.timeout
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if self._still_linked(fd):
                    break
                # The holder removed the VM (state=absent unlinks the lock file while holding it):
                # this lock is on a file nobody else will look at; lock the current one instead.
                os.close(fd)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                continue
            except (OSError, IOError) as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise BusyError("VM %s is busy: another run holds %s and did not release it "
                                    "within %.0f s" % (self.name, self.path, self.timeout))
                time.sleep(self.poll)
        self.fd = fd
        return self

    def _still_linked(self, fd):
        """Is the locked file still the one at self.path?"""
        try:
            current = os.stat(self.path)
        except OSError:
            return False
        held = os.fstat(fd)
        return (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino)

    def release(self):
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
