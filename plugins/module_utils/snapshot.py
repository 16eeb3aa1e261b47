# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshots that bring a VM back exactly, restores that never leave it half-done, clones,
fork-from-running and standby. The engine behind ch_snapshot and ch_vm's clone_from and
state=standby.

A snapshot directory holds what CH's ``vm.snapshot`` writes (``config.json``, ``state.json``,
``memory-ranges``), copies of the VM's writable disks in ``disks/`` (reflink or sparse copy,
taken while the VM is paused, so memory and disks agree) and ``manifest.json`` (CH version,
the VM's record, sizes, sha256 of config.json and state.json, time). It is built in
``.<name>.partial`` next to its final path and renamed into place once complete and fsynced.

Crash safety: before pausing a VM, or stopping it for a restore, a marker
``<vm_dir>/.snapshot-in-progress.json`` is written; it is removed when the operation is over.
A run that finds a marker (ch_vm or ch_snapshot, holding the VM's lock) repairs: it resumes a
VM left paused, removes the partial directory, and puts back disks a killed restore had swapped.
A clone writes the same marker (op ``clone``) into its new directory before it creates anything
and removes it once ``vm.restore`` has answered: a clone killed before its record was written is
removed and made again by the next ch_vm run (its files are half-made copies, never user data);
one killed after is finished (the restore is redone from ``clone-source``), never cold-booted.

No Ansible imports here. Callers hold the VM's lock (store.VmLock) around everything that writes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import errno
import hashlib
import json
import os
import shutil
import time

from ansible_collections.cloudhv.ch.plugins.module_utils import images
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import (
    ChApiError,
    CloudHVError,
    HostError,
    OptionError,
    StateError,
    VmmError,
    VmmNotReachable,
)
from ansible_collections.cloudhv.ch.plugins.module_utils.store import (
    VmLock,
    clear_marker,
    read_marker,
    write_marker,
    check_name,
    ensure_dir,
    fsync_dir,
    read_json,
    write_json_atomic,
)

FORMAT = 1
MANIFEST = 'manifest.json'
CH_FILES = ('config.json', 'state.json', 'memory-ranges')
CHECKSUMMED = ('config.json', 'state.json')
DISKS_DIR = 'disks'
CIDATA_COPY = 'cidata.iso'
REGISTRY = 'snapshots.json'
STANDBY = 'standby'
CLONE_SOURCE = 'clone-source'
MEMORY_RESTORE_MODES = {'copy': 'Copy', 'ondemand': 'OnDemand'}
CLONE_DISK_MODES = ('copy', 'overlay')


# -- small helpers -------------------------------------------------------------------------------
def now_iso():
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())


def ch_major(version):
    """'53.0.0' / 'v53.0' -> 53 (None when unknown)."""
    try:
        return int(str(version).strip().lstrip('vV').split('.', 1)[0])
    except (TypeError, ValueError):
        return None


def sha256_file(path):
    sha = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            sha.update(block)
    return sha.hexdigest()


def fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rmtree(path):
    if path and os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)


def _unlink(path):
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise


def binary_version(binary):
    """The version `binary --version` reports ('53.0'); VmmError when it cannot be run."""
    from ansible_collections.cloudhv.ch.plugins.module_utils.hostinfo import binary_facts
    facts = binary_facts(binary)
    if not facts.get('version'):
        raise VmmError("binary: cannot tell the version of %s: %s"
                       % (binary, facts.get('error') or 'no version in its output'), option='binary')
    return facts['version']


def disk_file_name(disk):
    return '%s-%s' % (disk['id'], os.path.basename(disk['path']))


# -- where snapshots live -------------------------------------------------------------------------
def default_path(layout, vm, name):
    return os.path.join(layout.snapshots_dir(vm), name)


def standby_path(layout, vm):
    return os.path.join(layout.vm_dir(vm), STANDBY)


def registry_path(layout, vm):
    return os.path.join(layout.vm_dir(vm), REGISTRY)


def read_registry(layout, vm):
    data = read_json(registry_path(layout, vm)) or {}
    snaps = data.get('snapshots') if isinstance(data, dict) else None
    return dict(snaps) if isinstance(snaps, dict) else {}


def write_registry(layout, vm, snaps):
    write_json_atomic(registry_path(layout, vm), {'snapshots': snaps})


def resolve_path(layout, vm, name, path=None):
    """The snapshot directory: the given path, else the one registered for the name, else the
    default ``<state_dir>/vms/<vm>/snapshots/<name>``."""
    if path:
        return os.path.normpath(path)
    registered = read_registry(layout, vm).get(name)
    return registered or default_path(layout, vm, name)


def read_manifest(path):
    """The manifest of the snapshot in ``path``, or None when there is none."""
    manifest = read_json(os.path.join(path, MANIFEST))
    if manifest is not None and not isinstance(manifest, dict):
        raise StateError("%s is not a snapshot manifest" % os.path.join(path, MANIFEST))
    return manifest


def snapshot_result(path, manifest, size=True):
    manifest = manifest or {}
    return {
        'name': manifest.get('name'), 'vm': manifest.get('vm'), 'path': path,
        'size_bytes': images.disk_usage(path) if size and os.path.isdir(path) else None,
        'created': manifest.get('created'), 'ch_version': manifest.get('ch_version'),
        'includes_disks': manifest.get('includes_disks'),
    }


def list_snapshots(layout, vm):
    """ch_vm_info: the VM's snapshots (registered or in the default directory), sorted by name."""
    found = dict(read_registry(layout, vm))
    try:
        for entry in os.listdir(layout.snapshots_dir(vm)):
            if not entry.startswith('.'):
                found.setdefault(entry, os.path.join(layout.snapshots_dir(vm), entry))
    except OSError:
        pass
    out = []
    for name in sorted(found):
        try:
            manifest = read_manifest(found[name])
        except StateError:
            manifest = None
        if manifest and manifest.get('vm') == vm:
            out.append(snapshot_result(found[name], manifest))
    return out


def verify(path, manifest, binary, option='name'):
    """Refuse a snapshot CH could not restore: a checksum that does not match its manifest, or a
    CH major version other than the binary's. Read-only; called before anything is stopped."""
    for fname in CHECKSUMMED:
        want = ((manifest.get('files') or {}).get(fname) or {}).get('sha256')
        fpath = os.path.join(path, fname)
        try:
            have = sha256_file(fpath)
        except (IOError, OSError) as exc:
            raise StateError("snapshot %s is damaged: cannot read %s (%s)" % (path, fname, exc))
        if not want or have != want:
            raise StateError("snapshot %s is damaged: the sha256 of %s does not match its manifest "
                             "(%s, expected %s); refusing to restore it" % (path, fname, have, want),
                             option=option)
    mem = os.path.join(path, 'memory-ranges')
    want_size = ((manifest.get('files') or {}).get('memory-ranges') or {}).get('size')
    if not os.path.isfile(mem) or (want_size is not None and os.path.getsize(mem) != want_size):
        raise StateError("snapshot %s is damaged: memory-ranges is missing or has the wrong size" % path,
                         option=option)
    for disk in manifest.get('disks') or []:
        dpath = os.path.join(path, disk['file'])
        if not os.path.isfile(dpath) or os.path.getsize(dpath) != disk['size']:
            raise StateError("snapshot %s is damaged: its copy of disk %s (%s) is missing or has the "
                             "wrong size" % (path, disk['id'], disk['file']), option=option)
    copied = set(d['id'] for d in manifest.get('disks') or [])
    for disk in ((manifest.get('record') or {}).get('spec') or {}).get('disks') or []:
        if disk['id'] not in copied and not os.path.exists(disk['path']):
            raise StateError("snapshot %s needs the disk %s (%s), which it holds no copy of and which no "
                             "longer exists" % (path, disk['path'], disk['id']), option=option)
    have_version = binary_version(binary)
    if ch_major(have_version) != ch_major(manifest.get('ch_version')):
        raise OptionError('binary', "snapshot %s was taken with Cloud Hypervisor %s and %s is %s: CH "
                          "snapshots do not cross major versions; restore it with a %d.x binary"
                          % (path, manifest.get('ch_version'), binary, have_version,
                             ch_major(manifest.get('ch_version')) or 0))


# -- the in-progress marker -------------------------------------------------------------------
def _live_state(vmm):
    """'Running', 'Paused', ... of the VM behind ``vmm``, or None (no VMM, or no VM in it)."""
    if vmm.pid() is None:
        return None
    try:
        return (vmm.client().info() or {}).get('state')
    except (ChApiError, VmmNotReachable):
        return None


def repair(layout, vm, vmm, check_mode=False):
    """Finish or undo what a killed run left behind (see the module docstring).

    The caller holds the VM's lock. Returns ``(changes, resumed)``: the repairs done (predicted
    in check mode) and whether the VM was (or would be) resumed."""
    marker = read_marker(layout, vm)
    if marker is None:
        return [], False
    changes = []
    resumed = False
    op = marker.get('op')
    if op == 'clone':
        return [], False      # ch_vm finishes or removes an interrupted clone (finish_clone)
    state = _live_state(vmm)
    tmp = marker.get('tmp')
    if op == 'restore':
        if state in ('Running', 'Paused'):
            changes.append('finish an interrupted restore: remove the old disks kept aside')
            if not check_mode:
                for dest, backup in marker.get('backups') or []:
                    _unlink(backup)
        else:
            changes.append('undo an interrupted restore: put the VM\'s disks back')
            if not check_mode:
                if vmm.pid() is not None:
                    vmm.stop(timeout=0, force=True)
                for dest, backup in marker.get('backups') or []:
                    if os.path.exists(backup):
                        os.rename(backup, dest)
        if not check_mode:
            for prepared, dest in marker.get('prepared') or []:
                _unlink(prepared)
    else:
        dest = marker.get('dest')
        if op == 'standby' and state is None and dest and read_manifest(dest):
            changes.append('finish an interrupted standby')
        elif op == 'standby' and dest and os.path.lexists(dest):
            changes.append('undo an interrupted standby: remove %s' % dest)
            if not check_mode:
                _rmtree(dest)
                record = layout.read_record(vm)
                if record and record.get('run_state') == 'standby':
                    layout.write_record(vm, dict(record, run_state=marker.get('run_state') or 'running'))
        if state == 'Paused' and marker.get('was_running'):
            changes.append('resume the VM left paused by an interrupted snapshot')
            resumed = True
            if not check_mode:
                vmm.client().resume()
        if tmp and os.path.lexists(tmp):
            changes.append('remove the partial snapshot %s' % tmp)
            if not check_mode:
                _rmtree(tmp)
    if not check_mode:
        clear_marker(layout, vm)
    return changes or ['remove a stale snapshot marker'], resumed


# -- taking a snapshot --------------------------------------------------------------------------
def _copy_disks(record, layout, vm, tmp):
    """Copy the VM's writable disks (and its cloud-init image, for clones) into tmp/disks."""
    spec = record.get('spec') or {}
    out = []
    writable = [d for d in spec.get('disks') or [] if not d.get('readonly')]
    cidata = os.path.join(layout.vm_dir(vm), 'cidata.iso')
    has_cidata = spec.get('cloud_init') and os.path.isfile(cidata)
    if not writable and not has_cidata:
        return out
    ensure_dir(os.path.join(tmp, DISKS_DIR))
    for disk in writable:
        fname = os.path.join(DISKS_DIR, disk_file_name(disk))
        method = images.copy_file(disk['path'], os.path.join(tmp, fname), overwrite=False)
        out.append({'id': disk['id'], 'path': disk['path'], 'file': fname, 'image_type': disk.get('image_type'),
                    'size': os.path.getsize(os.path.join(tmp, fname)), 'method': method})
    if has_cidata:
        images.copy_file(cidata, os.path.join(tmp, DISKS_DIR, CIDATA_COPY), overwrite=False)
    fsync_dir(os.path.join(tmp, DISKS_DIR))
    return out


def take(layout, vm, vmm, record, dest, name=None, include_disks=True, op='snapshot',
         keep_paused=False, extra_marker=None):
    """Snapshot the live VM ``vm`` into ``dest`` (which must not exist) and return the manifest.

    pause (if running) -> vm.snapshot into ``.<name>.partial`` next to ``dest`` -> copy disks ->
    manifest -> fsync -> rename -> resume. The VM is resumed on every way out, errors included,
    if it was running (unless ``keep_paused``: standby stops it next); the marker is cleared only
    then (with ``keep_paused`` the caller clears it). The caller holds the VM's lock."""
    parent = os.path.dirname(dest)
    tmp = os.path.join(parent, '.%s.partial' % os.path.basename(dest))
    client = vmm.client()
    info = client.info() or {}
    if info.get('state') not in ('Running', 'Paused'):
        raise StateError("VM %s is not running (CH reports %s); a snapshot needs a running or paused VM"
                         % (vm, info.get('state')))
    was_running = info.get('state') == 'Running'
    _rmtree(tmp)
    marker = {'op': op, 'tmp': tmp, 'dest': dest, 'was_running': was_running,
              'run_state': (record or {}).get('run_state')}
    marker.update(extra_marker or {})
    write_marker(layout, vm, marker)
    paused = False
    ok = False
    try:
        os.mkdir(tmp, 0o700)
        version = (client.ping() or {}).get('version')
        if was_running:
            client.pause()
            paused = True
        try:
            client.snapshot(tmp)
        except ChApiError as exc:
            raise HostError("snapshot of VM %s into %s failed: %s" % (vm, parent, exc.msg),
                            ch_messages=exc.messages)
        disks = _copy_disks(record, layout, vm, tmp) if include_disks else []
        files = {}
        for fname in CH_FILES:
            fpath = os.path.join(tmp, fname)
            fsync_file(fpath)
            files[fname] = {'size': os.path.getsize(fpath)}
            if fname in CHECKSUMMED:
                files[fname]['sha256'] = sha256_file(fpath)
        manifest = {
            'format': FORMAT, 'name': name or os.path.basename(dest), 'vm': vm,
            'created': now_iso(), 'created_ts': time.time(), 'ch_version': version,
            'includes_disks': bool(include_disks), 'vm_state': 'running' if was_running else 'paused',
            'record': record, 'files': files, 'disks': disks,
            'cidata': os.path.join(DISKS_DIR, CIDATA_COPY)
            if os.path.isfile(os.path.join(tmp, DISKS_DIR, CIDATA_COPY)) else None,
        }
        write_json_atomic(os.path.join(tmp, MANIFEST), manifest)
        fsync_dir(tmp)
        os.rename(tmp, dest)
        fsync_dir(parent)
        ok = True
        return manifest
    except (OSError, IOError) as exc:
        raise HostError("snapshot of VM %s into %s failed: %s" % (vm, dest, exc))
    finally:
        if not ok:
            _rmtree(tmp)
        if paused and (not keep_paused or not ok):
            client.resume()          # an error here keeps the marker: the next run resumes
        if not keep_paused or not ok:
            clear_marker(layout, vm)


# -- restoring --------------------------------------------------------------------------------
def _prepared_name(path):
    return os.path.join(os.path.dirname(path), '.%s.restore' % os.path.basename(path))


def _backup_name(path):
    return os.path.join(os.path.dirname(path), '.%s.pre-restore' % os.path.basename(path))


def restore(mgr, path, manifest, resume=True, memory_restore_mode='copy', prefault=False):
    """Bring ``mgr``'s VM back to the snapshot in ``path`` (already verified).

    Disk copies are prepared next to the live disks first (a full disk fails here, before
    anything is stopped); then the VMM is stopped, the disks swapped in (the old ones kept aside
    until the restore worked), taps recreated, a bare VMM started and ``vm.restore`` sent. If CH
    refuses, the old disks are put back and the VM is left stopped. Returns the new record."""
    layout, vm = mgr.layout, mgr.name
    record = layout.read_record(vm)
    snap_record = manifest.get('record') or {}
    pairs = [(os.path.join(path, d['file']), d['path']) for d in manifest.get('disks') or []]
    prepared = []
    try:
        for src, dest in pairs:
            if not os.path.isdir(os.path.dirname(dest)):
                raise HostError("cannot restore disk %s: its directory is gone" % dest)
            images.copy_file(src, _prepared_name(dest), overwrite=True)
            prepared.append((_prepared_name(dest), dest))
    except CloudHVError:
        for tmp, dest in prepared:
            _unlink(tmp)
        raise
    backups = [(dest, _backup_name(dest)) for src, dest in pairs]
    write_marker(layout, vm, {'op': 'restore', 'snapshot': path, 'prepared': prepared, 'backups': backups})
    cur_spec = (record or {}).get('spec') or {}
    if _live_state(mgr.vmm) == 'Running':
        mgr.vmm.client().pause()     # a paused VM skips the ACPI step of the stop ladder
    if cur_spec:
        mgr._stop(cur_spec)      # the VMM and the VM's taps
    else:
        mgr.vmm.stop(timeout=0, force=True)
    for (tmp, dest), (dest2, backup) in zip(prepared, backups):
        _unlink(backup)
        if os.path.exists(dest):
            os.link(dest, backup)
        os.rename(tmp, dest)
        fsync_dir(os.path.dirname(dest))
    snap_spec = snap_record.get('spec') or cur_spec
    try:
        mgr._ensure_taps(snap_spec)
        mgr.launch_vmm()
        mgr.vmm.client().restore(path, prefault=prefault,
                                 memory_restore_mode=MEMORY_RESTORE_MODES[memory_restore_mode],
                                 resume=resume)
    except CloudHVError as exc:
        try:
            mgr.vmm.stop(timeout=0, force=True)
            mgr._remove_taps([t for t in mgr._managed_taps(snap_spec) if mgr.netlink().link(t) is not None])
            for dest, backup in backups:
                if os.path.exists(backup):
                    os.rename(backup, dest)
            if record:
                layout.write_record(vm, dict(record, run_state='stopped'))
        finally:
            clear_marker(layout, vm)
        raise StateError("restore of VM %s from %s failed: %s; its disks were put back and the VM is "
                         "stopped" % (vm, path, exc.msg), **exc.details)
    for dest, backup in backups:
        _unlink(backup)
    new = dict(record or {}, spec=snap_record.get('spec') or cur_spec,
               config=snap_record.get('config') or (record or {}).get('config'),
               run_state='running' if resume else 'paused')
    managed = list((record or {}).get('managed_files') or [])
    for item in snap_record.get('managed_files') or []:
        if item not in managed:
            managed.append(item)
    new['managed_files'] = managed
    layout.write_record(vm, new)
    _rmtree(standby_path(layout, vm))
    clear_marker(layout, vm)
    return new


# -- standby ------------------------------------------------------------------------------------
def standby_manifest(layout, vm):
    path = standby_path(layout, vm)
    try:
        return read_manifest(path)
    except StateError:
        return None


STANDBY_DISKS = 'disks-at-standby.json'


def _disk_fingerprints(spec):
    """(path, size, mtime_ns, inode) of the VM's writable disks: what must not change while the
    VM is in standby (its memory holds their page cache and filesystem state)."""
    out = []
    for disk in spec.get('disks') or []:
        if disk.get('readonly'):
            continue
        try:
            st = os.stat(disk['path'])
            out.append([disk['path'], st.st_size, st.st_mtime_ns, st.st_ino])
        except OSError:
            out.append([disk['path'], None, None, None])
    return out


def check_standby_disks(layout, vm, spec):
    """Refuse to wake a VM whose writable disks changed (or went) since it went into standby:
    its restored memory would not match them."""
    recorded = read_json(os.path.join(standby_path(layout, vm), STANDBY_DISKS))
    if not isinstance(recorded, list):
        return       # a standby taken before this check existed
    now = dict((f[0], f) for f in _disk_fingerprints(spec))
    changed = [f[0] for f in recorded if now.get(f[0]) != f]
    if changed:
        raise StateError("%s changed since %s went into standby: its saved memory no longer matches "
                         "its disks, so it cannot be resumed from there (state=stopped discards the "
                         "standby state, then state=running boots it afresh)" % (', '.join(changed), vm),
                         option='state')


def go_standby(mgr, spec, record, run_state):
    """Snapshot the live VM into its own directory (memory and device state), then stop the VMM
    and remove its taps. Its disks stay where they are, and are not copied: once the VMM is gone
    nothing writes them, and their size, mtime and inode are recorded so that waking refuses disks
    that changed meanwhile (check_standby_disks) - memory and disks stay consistent without a
    disk copy. On failure the VM keeps running (or paused) and the record is put back."""
    layout, vm = mgr.layout, mgr.name
    dest = standby_path(layout, vm)
    _rmtree(dest)
    try:
        take(layout, vm, mgr.vmm, record, dest, name=STANDBY, include_disks=False, op='standby',
             keep_paused=True, extra_marker={'run_state': run_state})
    except CloudHVError:
        layout.write_record(vm, dict(layout.read_record(vm) or record, run_state=run_state))
        raise
    mgr._stop(spec)
    write_json_atomic(os.path.join(dest, STANDBY_DISKS), _disk_fingerprints(spec))
    clear_marker(layout, vm)


def wake(mgr, paused=False):
    """Restore the VM from its standby snapshot (a new VMM), then drop the snapshot. On failure
    the VMM is stopped again and the VM stays in standby."""
    layout, vm = mgr.layout, mgr.name
    path = standby_path(layout, vm)
    manifest = read_manifest(path) or {}
    spec = (manifest.get('record') or {}).get('spec') or (layout.read_record(vm) or {}).get('spec') or {}
    try:
        mgr._ensure_taps(spec)
        mgr.launch_vmm()
        mgr.vmm.client().restore(path, resume=not paused)
    except CloudHVError:
        try:
            mgr.vmm.stop(timeout=0, force=True)
        finally:
            mgr._remove_taps([t for t in mgr._managed_taps(spec) if mgr.netlink().link(t) is not None])
        raise
    _rmtree(path)


# -- clones -------------------------------------------------------------------------------------
class Clone(object):
    """A plan to create VM ``mgr.name`` from a snapshot (or by forking a running VM).

    Built (and validated) before anything is touched; ``record`` is the clone's record as it
    will be, ``files`` the paths the clone will create, ``config`` the restore config."""

    def __init__(self, mgr, clone_from):
        self.mgr = mgr
        self.layout = mgr.layout
        opts = clone_from or {}
        self.source = opts.get('vm')
        self.snapshot = opts.get('snapshot')
        self.path = opts.get('path')
        mode = opts.get('memory_restore_mode') or 'copy'
        if mode not in MEMORY_RESTORE_MODES:
            raise OptionError('clone_from.memory_restore_mode', "must be copy or ondemand")
        self.memory_restore_mode = mode
        self.prefault = bool(opts.get('prefault'))
        self.disk_mode = opts.get('disks') or 'copy'
        self.base_formats = {}     # overlay base -> its format (raw or qcow2)
        if self.disk_mode not in CLONE_DISK_MODES:
            raise OptionError('clone_from.disks', "must be copy or overlay, got %r" % (self.disk_mode,))
        if self.prefault and mode == 'ondemand':
            raise OptionError('clone_from.prefault', "cannot be combined with clone_from.memory_restore_mode="
                              "ondemand (CH maps the memory lazily then; prefault needs copy)")
        # what a clone killed before it wrote its record left behind (removed by run())
        self.leftover = partial_clone(mgr.layout, mgr.name)
        if self.path and (self.source or self.snapshot):
            raise OptionError('clone_from', "give either path, or vm (with or without snapshot)")
        if not self.path and not self.source:
            raise OptionError('clone_from', "needs vm (and optionally snapshot) or path")
        if self.snapshot and not self.source:
            raise OptionError('clone_from.snapshot', "needs clone_from.vm")
        if self.source is not None:
            check_name(self.source, 'clone_from.vm')
            if self.source == mgr.name:
                raise OptionError('clone_from.vm', "a VM cannot be cloned from itself")
        if self.snapshot is not None:
            check_name(self.snapshot, 'clone_from.snapshot')
        self.fork = bool(self.source and not self.snapshot)
        if self.fork and self.disk_mode == 'overlay':
            raise OptionError('clone_from.disks', "overlay needs a snapshot that stays as the clone's base, and a "
                              "fork's snapshot is temporary: name one with clone_from.snapshot, or use copy")
        self.manifest = None
        if self.fork:
            base = self.layout.read_record(self.source)
            if base is None:
                raise OptionError('clone_from.vm', "there is no VM named %s on this host" % self.source)
            from ansible_collections.cloudhv.ch.plugins.module_utils.lifecycle import VmManager
            src_mgr = VmManager(dict(mgr.params, name=self.source, binary=base.get('binary') or mgr.params['binary']),
                                check_mode=True, host=mgr.host)
            try:
                obs = src_mgr.observe()
            finally:
                src_mgr.close()
            if not obs.live:
                raise OptionError('clone_from.vm', "%s is %s: forking needs a running or paused VM (or name a "
                                  "snapshot with clone_from.snapshot)" % (self.source, obs.state))
            self.src_path = None
            self.src_config = (obs.info or {}).get('config') or base.get('config')
        else:
            if self.path:
                self.src_path = os.path.normpath(self.path)
                option = 'clone_from.path'
            else:
                if self.layout.read_record(self.source) is None and \
                        not os.path.isdir(self.layout.vm_dir(self.source)):
                    raise OptionError('clone_from.vm', "there is no VM named %s on this host" % self.source)
                self.src_path = resolve_path(self.layout, self.source, self.snapshot)
                option = 'clone_from.snapshot'
            self.manifest = read_manifest(self.src_path) if os.path.isdir(self.src_path) else None
            if not self.manifest:
                raise OptionError(option, "no snapshot at %s" % self.src_path)
            verify(self.src_path, self.manifest, mgr.params['binary'], option=option)
            base = self.manifest.get('record') or {}
            self.source = self.manifest.get('vm')
            try:
                with open(os.path.join(self.src_path, 'config.json')) as handle:
                    self.src_config = json.load(handle)
            except (IOError, OSError, ValueError) as exc:
                raise StateError("cannot read %s/config.json: %s" % (self.src_path, exc))
        self.base = base
        self.spec, self.files = self._identity(base.get('spec') or {})
        self.record = {
            'spec': self.spec, 'config': mgr.build_config(self.spec), 'binary': mgr.params['binary'],
            'cloned_from': {'vm': self.source, 'snapshot': self.snapshot, 'path': self.src_path,
                            'fork': self.fork},
            'managed_files': list(self.files),
        }
        self.config = self._rewrite(copy.deepcopy(self.src_config))

    # the clone's identity --------------------------------------------------------------------
    def _identity(self, base_spec):
        from ansible_collections.cloudhv.ch.plugins.module_utils import spec as specmod
        mgr = self.mgr
        spec = copy.deepcopy(base_spec)
        files = []
        used = set()
        for disk in spec.get('disks') or []:
            if disk.get('readonly'):
                continue        # read-only disks are shared (CH takes a read lock)
            fname = os.path.basename(disk['path'])
            if self.disk_mode == 'overlay':
                self._overlay_base(disk)
                fname = os.path.splitext(fname)[0] + '.qcow2'
            if fname in used or fname in ('vm.json', 'cidata.iso', 'serial.log', 'ch.log'):
                fname = disk_file_name(disk)
            used.add(fname)
            disk['path'] = os.path.join(mgr.vm_dir, fname)
            disk['size'] = None
            if os.path.lexists(disk['path']) and disk['path'] not in self._leftover_files():
                raise OptionError('clone_from', "the clone's disk %s already exists (left by an earlier VM "
                                  "named %s? remove it, e.g. with state=absent purge=true)" % (disk['path'], mgr.name))
            files.append(disk['path'])
        for index, net in enumerate(spec.get('networks') or []):
            if net.get('user_tap'):
                raise OptionError('clone_from', "NIC %d of %s uses the tap %s, which a clone cannot share; "
                                  "attach the source to a bridge instead" % (index, self.source, net['user_tap']))
            net['mac'] = specmod.mac_address(mgr.host, mgr.name, index)
            net['tap'] = specmod.tap_name(mgr.host, mgr.name, index)
            # the source's static DHCP address is its own: the clone's NIC gets a dynamic lease
            net.pop('address', None)
        if spec.get('vsock'):
            spec['vsock'] = {'cid': self._free_cid(), 'socket': os.path.join(mgr.vm_dir, 'vsock.sock')}
        if (spec.get('platform') or {}).get('uuid'):
            # SMBIOS identity: the clone is another machine (the guest sees it from its next boot:
            # the tables of the running guest are in the restored memory)
            spec['platform'] = dict(spec['platform'], uuid=specmod.machine_uuid(mgr.host, mgr.name))
        if spec.get('cloud_init'):
            suffix = hashlib.sha256(('%s\0%s\0%s' % (self.source, mgr.name, time.time())).encode()).hexdigest()[:8]
            spec['cloud_init'] = dict(spec['cloud_init'], instance_id='iid-%s-%s' % (mgr.name, suffix),
                                      hostname=_hostname(mgr.name), digest=None)
            files.append(mgr.cidata_path())
        return spec, files

    def _overlay_base(self, disk):
        """Turn a disk of the clone's spec into a qcow2 overlay on the snapshot's copy of it."""
        base = os.path.join(self.src_path, DISKS_DIR, disk_file_name(disk))
        if disk.get('image_type') not in ('raw', 'qcow2'):
            raise OptionError('clone_from.disks', "disk %s is %s: an overlay needs a raw or qcow2 base; use copy"
                              % (disk['id'], disk.get('image_type')))
        if not os.path.isfile(base):
            raise StateError("the snapshot has no copy of disk %s (taken with include_disks=false?); "
                             "a clone needs its own disks" % disk['id'], option='clone_from')
        self.base_formats[base] = disk['image_type']
        disk.update(backing_file=base, image_type='qcow2', image_type_explicit=True)

    def _leftover_files(self):
        return set((self.leftover or {}).get('files') or [])

    def _free_cid(self):
        used = set()
        for vm in self.layout.list_vms():
            record = self.layout.read_record(vm) or {}
            cid = ((record.get('spec') or {}).get('vsock') or {}).get('cid')
            if cid:
                used.add(cid)
        cid = 3
        while cid in used:
            cid += 1
        return cid

    def _rewrite(self, config):
        """The snapshot's config.json with the clone's identity: disk paths, taps, MACs, serial
        and console files/sockets, vsock, cloud-init image. Everything else is CH's echo."""
        built = self.record['config']
        for key, fields in (('disks', ('path', 'image_type', 'backing_files')), ('net', ('tap', 'mac'))):
            by_id = dict((d.get('id'), d) for d in built.get(key) or [])
            for item in config.get(key) or []:
                new = by_id.get(item.get('id'))
                if new is not None:
                    for field in fields:
                        if field in new:
                            item[field] = new[field]
        for key in ('serial', 'console'):
            if isinstance(config.get(key), dict) and isinstance(built.get(key), dict):
                for field in ('file', 'socket'):
                    if config[key].get(field) and built[key].get(field):
                        config[key][field] = built[key][field]
        if config.get('vsock') and built.get('vsock'):
            config['vsock'].update(cid=built['vsock']['cid'], socket=built['vsock']['socket'])
        if isinstance(config.get('platform'), dict) and (built.get('platform') or {}).get('uuid'):
            config['platform']['uuid'] = built['platform']['uuid']
        src_dir = self.layout.vm_dir(self.source) + '/'
        text = json.dumps(config)
        if src_dir in text:      # anything else that lived in the source's directory
            config = json.loads(text.replace(src_dir, self.mgr.vm_dir + '/'))
        return config

    # results ---------------------------------------------------------------------------------
    def describe(self):
        if self.fork:
            what = "fork %s: pause it for a snapshot with copies of its disks, resume it" % self.source
        else:
            what = "clone from snapshot %s of %s (%s)" % (self.manifest.get('name'), self.source, self.src_path)
        first = ['remove what an interrupted clone left in %s' % self.mgr.vm_dir] if self.leftover else []
        return first + ['%s; new MACs, taps and disk copies for %s' % (what, self.mgr.name)]

    def predicted(self, paused):
        """The clone as check mode predicts it: a live VM running the rewritten config."""
        return self.record, {'config': self.config, 'state': 'Paused' if paused else 'Running'}

    # doing it -------------------------------------------------------------------------------
    def run(self, paused=False):
        """Create the clone (the caller holds the clone's lock; its directory may not exist)."""
        mgr = self.mgr
        undo_partial_clone(self.layout, mgr.name)
        new_dir = not os.path.isdir(mgr.vm_dir) or not os.listdir(mgr.vm_dir)
        mgr.layout.ensure_dirs(mgr.name)
        work = os.path.join(mgr.vm_dir, CLONE_SOURCE)
        _rmtree(work)
        started = False
        write_marker(self.layout, mgr.name, {'op': 'clone', 'files': list(self.files), 'work': work,
                                             'memory_restore_mode': self.memory_restore_mode,
                                             'prefault': self.prefault})
        try:
            with VmLock(self.layout, self.source, timeout=mgr.lock_timeout):
                if self.fork:
                    self._fork(work)
                else:
                    images.copy_tree(self.src_path, work, hardlink=('memory-ranges',))
                    self._place_disks(os.path.join(self.src_path, DISKS_DIR), move=False)
                    cidata_src = os.path.join(self.src_path, DISKS_DIR, CIDATA_COPY)
            if self.fork:
                cidata_src = os.path.join(work, DISKS_DIR, CIDATA_COPY)
            _unlink(os.path.join(work, MANIFEST))
            write_json_atomic(os.path.join(work, 'config.json'), self.config)
            if self.spec.get('cloud_init'):
                self._build_cidata(cidata_src)
            _rmtree(os.path.join(work, DISKS_DIR))
            record = dict(self.record, run_state='paused' if paused else 'running')
            mgr.layout.write_record(mgr.name, record)
            mgr._ensure_taps(self.spec)
            started = True
            _restore_clone(mgr, work, self.memory_restore_mode, self.prefault, paused)
            clear_marker(self.layout, mgr.name)
        except BaseException:
            if started:
                try:
                    mgr.vmm.stop(timeout=0, force=True)
                finally:
                    mgr._remove_taps([t for t in mgr._managed_taps(self.spec) if mgr.netlink().link(t) is not None])
            _unlink(mgr.layout.record_path(mgr.name))
            for path in self.files:
                _unlink(path)
            _rmtree(work)
            clear_marker(self.layout, mgr.name)
            if new_dir:
                _rmtree(mgr.vm_dir)
            raise
        _drop_fork_source(self.record, work, self.memory_restore_mode)

    def _fork(self, work):
        """Snapshot the running source straight into the clone's directory (paused only for the
        snapshot and its disk copies), then move the disk copies to the clone's paths."""
        from ansible_collections.cloudhv.ch.plugins.module_utils.lifecycle import VmManager
        record = self.layout.read_record(self.source)
        src = VmManager(dict(self.mgr.params, name=self.source, binary=record.get('binary') or self.mgr.params['binary']),
                        check_mode=True, host=self.mgr.host)
        try:
            repair(self.layout, self.source, src.vmm)
            manifest = take(self.layout, self.source, src.vmm, record, work, name='fork-%s' % self.mgr.name)
        finally:
            src.close()
        have = binary_version(self.mgr.params['binary'])
        if ch_major(have) != ch_major(manifest.get('ch_version')):
            raise OptionError('binary', "%s runs Cloud Hypervisor %s and %s is %s: CH snapshots do not "
                              "cross major versions" % (self.source, manifest.get('ch_version'),
                                                        self.mgr.params['binary'], have))
        self.manifest = manifest
        self._place_disks(os.path.join(work, DISKS_DIR), move=True)

    def _place_disks(self, disks_dir, move):
        if self.disk_mode == 'overlay':
            for disk in self.spec.get('disks') or []:
                if disk['path'] in self.files:
                    images.create_overlay(disk['path'], disk['backing_file'], option='clone_from.disks',
                                          backing_format=self.base_formats[disk['backing_file']])
            return
        by_id = dict((d['id'], d['path']) for d in self.spec.get('disks') or [] if d['path'] in self.files)
        src_disks = dict((d['id'], d) for d in (self.base.get('spec') or {}).get('disks') or [])
        for disk_id, path in by_id.items():
            copy_src = os.path.join(disks_dir, disk_file_name(src_disks[disk_id]))
            if not os.path.isfile(copy_src):
                raise StateError("the snapshot has no copy of disk %s (taken with include_disks=false?); "
                                 "a clone needs its own disks" % disk_id, option='clone_from')
            if move:
                os.rename(copy_src, path)
            else:
                images.copy_file(copy_src, path, overwrite=False)

    def _build_cidata(self, cidata_src):
        from ansible_collections.cloudhv.ch.plugins.module_utils import cloudinit
        import yaml
        if os.path.isfile(cidata_src):
            files = cloudinit.read_iso(cidata_src)
        else:
            files = {cloudinit.USER_DATA: cloudinit.EMPTY_USER_DATA}
        meta = {}
        if files.get(cloudinit.META_DATA):
            meta = yaml.safe_load(files[cloudinit.META_DATA].decode('utf-8')) or {}
        meta['instance-id'] = self.spec['cloud_init']['instance_id']
        meta['local-hostname'] = self.spec['cloud_init']['hostname']
        files[cloudinit.META_DATA] = yaml.safe_dump(meta, sort_keys=False, default_flow_style=False).encode('utf-8')
        cloudinit.build_iso(self.mgr.cidata_path(), files)
        self.spec['cloud_init']['digest'] = cloudinit.digest_files(files)
        self.record['config'] = self.mgr.build_config(self.spec)


def linked_clones(layout, directory, exclude=None):
    """VMs whose disks are qcow2 overlays on a file under ``directory`` (a snapshot, or a VM's
    directory with its snapshots): removing it would break them."""
    prefix = os.path.normpath(directory) + os.sep
    out = []
    for vm in layout.list_vms():
        if vm == exclude:
            continue
        disks = ((layout.read_record(vm) or {}).get('spec') or {}).get('disks') or []
        if any((d.get('backing_file') or '').startswith(prefix) for d in disks):
            out.append(vm)
    return out


def _restore_clone(mgr, work, memory_restore_mode, prefault, paused):
    mgr.launch_vmm()
    mgr.vmm.client().restore(work, memory_restore_mode=MEMORY_RESTORE_MODES[memory_restore_mode],
                             prefault=prefault, resume=not paused)


def partial_clone(layout, vm):
    """The marker of a clone killed before it wrote its record, or None."""
    marker = read_marker(layout, vm)
    if marker and marker.get('op') == 'clone' and layout.read_record(vm) is None:
        return marker
    return None


def undo_partial_clone(layout, vm):
    """Remove what a clone killed before its record left: half-made disk copies, cloud-init
    image and clone-source (all created by that clone; the VM never existed). True if any."""
    marker = partial_clone(layout, vm)
    if marker is None:
        return False
    vm_dir = layout.vm_dir(vm)
    for path in marker.get('files') or []:
        if os.path.dirname(path) == vm_dir:
            _unlink(path)
    _rmtree(os.path.join(vm_dir, CLONE_SOURCE))
    clear_marker(layout, vm)
    return True


def repair_before_removal(layout, vm, vmm, check_mode=False):
    """What a run that removes the VM does with a marker it finds: an interrupted clone without a
    record is undone (its half-made files removed), one with a record is not finished (the VM is
    going), anything else is repaired as usual. Returns the changes (predicted in check mode)."""
    marker = read_marker(layout, vm)
    if marker is None:
        return []
    if marker.get('op') != 'clone':
        return repair(layout, vm, vmm, check_mode=check_mode)[0]
    if partial_clone(layout, vm):
        if not check_mode:
            undo_partial_clone(layout, vm)
        return ['remove what an interrupted clone left in %s' % layout.vm_dir(vm)]
    if not check_mode:
        clear_marker(layout, vm)
    return []


def finish_clone(mgr, marker, run_state, check_mode=False):
    """Finish a clone killed after it wrote its record: its disks, cloud-init image and
    clone-source are complete; redo the restore unless it got through. Caller holds the lock."""
    state = _live_state(mgr.vmm)
    work = marker.get('work') or os.path.join(mgr.vm_dir, CLONE_SOURCE)
    mode = marker.get('memory_restore_mode') or 'copy'
    record = mgr.layout.read_record(mgr.name) or {}
    if state in ('Running', 'Paused'):
        changes = ['finish an interrupted clone (its restore had completed)']
    else:
        changes = ['finish an interrupted clone: restore %s in a new VMM' % work]
        if not check_mode:
            if mgr.vmm.pid() is not None:
                mgr.vmm.stop(timeout=0, force=True)
            mgr.vmm.cleanup()
            mgr._ensure_taps(record.get('spec') or {})
            _restore_clone(mgr, work, mode, marker.get('prefault'),
                           paused=run_state != 'running')
    if not check_mode:
        clear_marker(mgr.layout, mgr.name)
        _drop_fork_source(record, work, mode)
    return changes, run_state if state is None else state.lower()


def _other_links(path):
    """How many other names the file ``path`` has (hard links), 0 when it is missing."""
    try:
        return os.stat(path).st_nlink - 1
    except OSError:
        return 0


def _drop_fork_source(record, work, memory_restore_mode):
    """Remove a fork's clone-source once its restore got through: the fork's snapshot was
    temporary, and vm.restore has copied its memory into the guest. Kept with ondemand (CH reads
    memory-ranges for as long as the VM runs) and for clones of a named snapshot (a hard link)."""
    if (record.get('cloned_from') or {}).get('fork') and memory_restore_mode == 'copy':
        _rmtree(work)


def _hostname(name):
    from ansible_collections.cloudhv.ch.plugins.module_utils.cloudinit import default_hostname
    return default_hostname(name)


# -- ch_snapshot ------------------------------------------------------------------------------
class SnapshotManager(object):
    """Converges one snapshot of one VM; ``params`` are ch_snapshot's module parameters."""

    def __init__(self, params, check_mode=False, lock_timeout=60.0):
        from ansible_collections.cloudhv.ch.plugins.module_utils.lifecycle import VmManager
        self.params = params
        self.check_mode = check_mode
        self.vm = check_name(params['vm'], 'vm')
        self.name = check_name(params['name'], 'name')
        mode = params.get('memory_restore_mode') or 'copy'
        if mode not in MEMORY_RESTORE_MODES:
            raise OptionError('memory_restore_mode', "must be copy or ondemand, got %r" % mode)
        if params.get('prefault') and mode == 'ondemand':
            raise OptionError('prefault', "cannot be combined with memory_restore_mode=ondemand (CH "
                              "maps the memory lazily then; prefault needs memory_restore_mode=copy)")
        if params.get('path') and not os.path.isabs(params['path']):
            raise OptionError('path', "must be an absolute path, got %r" % params['path'])
        self.lock_timeout = lock_timeout
        self.mgr = VmManager(dict(params, name=self.vm), check_mode=check_mode, lock_timeout=lock_timeout)
        self.layout = self.mgr.layout
        self.layout.check_socket_path(self.vm)

    def run(self):
        state = self.params.get('state') or 'present'
        record = self.layout.read_record(self.vm)
        path = resolve_path(self.layout, self.vm, self.name, self.params.get('path'))
        if self.params.get('path'):
            registered = read_registry(self.layout, self.vm).get(self.name)
            if state == 'present' and registered and registered != path and read_manifest_quiet(registered):
                raise OptionError('name', "VM %s already has a snapshot named %s, at %s"
                                  % (self.vm, self.name, registered))
        if state in ('present', 'restored') and record is None:
            raise OptionError('vm', "there is no VM named %s on this host" % self.vm)
        manifest = self._existing(path)
        if state == 'present' and manifest is None:
            parent = os.path.dirname(path)
            if self.params.get('path') and not os.path.isdir(parent):
                raise OptionError('path', "the directory %s does not exist" % parent)
        if state == 'restored':
            if manifest is None:
                raise OptionError('name', "VM %s has no snapshot named %s (looked in %s)" % (self.vm, self.name, path))
            verify(path, manifest, self.params['binary'])
        try:
            if self.check_mode:
                return self._converge(state, path, manifest)
            self.layout.ensure_dirs()
            with VmLock(self.layout, self.vm, timeout=self.lock_timeout):
                return self._converge(state, path, manifest)
        finally:
            self.mgr.close()

    def _existing(self, path):
        """The manifest at ``path`` if it is this VM's snapshot of this name; refuse anything else."""
        if not os.path.lexists(path):
            return None
        if not os.path.isdir(path):
            raise OptionError('path', "%s exists and is not a snapshot directory" % path)
        manifest = read_manifest(path)
        if manifest is None:
            if os.listdir(path):
                raise OptionError('path', "%s exists, is not empty and holds no snapshot (no %s)" % (path, MANIFEST))
            return None
        if manifest.get('vm') != self.vm or manifest.get('name') != self.name:
            raise OptionError('path', "%s holds snapshot %s of VM %s, not %s of %s"
                              % (path, manifest.get('name'), manifest.get('vm'), self.name, self.vm))
        return manifest

    def _result(self, changes, before, after, snap, warnings=()):
        return {'changed': bool(changes), 'changes': changes, 'diff': {'before': before, 'after': after},
                'snapshot': snap, 'warnings': list(warnings)}

    def _converge(self, state, path, manifest):
        changes = []
        if read_marker(self.layout, self.vm):
            changes.extend(repair(self.layout, self.vm, self.mgr.vmm, check_mode=self.check_mode)[0])
        before = {'state': 'present' if manifest else 'absent', 'path': path}
        if manifest:
            before['created'] = manifest.get('created')
        if state == 'absent':
            if manifest is None and not os.path.lexists(path):
                return self._result(changes, before, {'state': 'absent', 'path': path},
                                    dict(snapshot_result(path, None, size=False), name=self.name, vm=self.vm))
            users = linked_clones(self.layout, path)
            if users:
                raise OptionError('state', "snapshot %s of %s is the base of the disks of %s (cloned with "
                                  "clone_from.disks=overlay); remove %s first" % (
                                      self.name, self.vm, ', '.join(users), 'them' if len(users) > 1 else 'it'))
            snap = snapshot_result(path, manifest)
            changes.append('delete snapshot %s of %s (%s)' % (self.name, self.vm, path))
            warnings = []
            held = _other_links(os.path.join(path, 'memory-ranges'))
            if held:
                warnings.append("the memory-ranges of snapshot %s of %s is hard-linked by %d clone(s) (their "
                                "clone-source): its disk space is freed only when they are removed"
                                % (self.name, self.vm, held))
            if not self.check_mode:
                _rmtree(path)
                fsync_dir(os.path.dirname(path))
                self._register(None)
            return self._result(changes, before, {'state': 'absent', 'path': path}, snap, warnings)
        if state == 'present':
            if manifest is not None:
                if not self.check_mode and read_registry(self.layout, self.vm).get(self.name) != path:
                    self._register(path)
                return self._result(changes, before, before, snapshot_result(path, manifest))
            return self._take(path, before, changes)
        return self._restore(path, manifest, before, changes)

    def _register(self, path):
        ensure_dir(self.layout.vm_dir(self.vm))
        snaps = read_registry(self.layout, self.vm)
        if path is None:
            snaps.pop(self.name, None)
        else:
            snaps[self.name] = path
        write_registry(self.layout, self.vm, snaps)

    def _take(self, path, before, changes):
        obs = self.mgr.observe()
        if not obs.live:
            raise StateError("vm: %s is %s; a snapshot captures a running or paused VM (start it, or bring it "
                             "back from standby, first)" % (self.vm, obs.state), option='vm')
        include = self.params.get('include_disks', True)
        pause = ' (pausing it, then resuming it)' if obs.state == 'running' else ''
        changes.append('snapshot %s%s into %s%s' % (self.vm, pause, path, ', with copies of its disks' if include else ''))
        after = {'state': 'present', 'path': path}
        if self.check_mode:
            version = None
            try:
                version = (self.mgr.vmm.client().ping() or {}).get('version')
            except (ChApiError, VmmNotReachable):
                pass
            snap = {'name': self.name, 'vm': self.vm, 'path': path, 'size_bytes': None, 'created': None,
                    'ch_version': version, 'includes_disks': bool(include)}
            return self._result(changes, before, after, snap)
        if path == default_path(self.layout, self.vm, self.name):
            ensure_dir(os.path.dirname(path))
        manifest = take(self.layout, self.vm, self.mgr.vmm, obs.record, path, name=self.name, include_disks=include)
        self._register(path)
        after['created'] = manifest['created']
        return self._result(changes, before, after, snapshot_result(path, manifest))

    def _restore(self, path, manifest, before, changes):
        obs = self.mgr.observe()
        resume = self.params.get('resume', True)
        changes.append('restore %s from snapshot %s (%s): stop its VMM%s, start a new one, %s'
                       % (self.vm, self.name, path,
                          ', put back its disks' if manifest.get('disks') else '',
                          'resume it' if resume else 'leave it paused'))
        warnings = []
        if not manifest.get('includes_disks'):
            warnings.append("snapshot %s has no disk copies (include_disks=false): the VM's memory comes back "
                            "but its disks keep their current content" % self.name)
        if not self.check_mode:
            restore(self.mgr, path, manifest, resume=resume,
                    memory_restore_mode=self.params.get('memory_restore_mode') or 'copy',
                    prefault=bool(self.params.get('prefault')))
        after = dict(before, vm_state='running' if resume else 'paused')
        before = dict(before, vm_state=obs.state)
        return self._result(changes, before, after, snapshot_result(path, manifest), warnings)


def read_manifest_quiet(path):
    try:
        return read_manifest(path)
    except StateError:
        return None
