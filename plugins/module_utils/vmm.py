# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Cloud Hypervisor process: launch, liveness, and the stop ladder.

* launch: the binary runs detached from the module (new session, stdin /dev/null, stdout and
  stderr appended to a log file, no inherited fds) with ``--api-socket path=<sock>``; a pid file
  is written; a stale socket is removed first, but only when no live process owns it; the VMM runs
  under umask 0177, so its sockets, logs and snapshot files are 0600, and the API socket is
  chmod 0600 once it answers (whatever the binary does about modes); we wait
  (5 ms poll) until ``vmm.ping`` answers and fail fast with the log's tail if the process exits.
* ``launcher='systemd'`` runs the same command line as a transient unit
  (``cloudhv-vmm-<socket name>.service``) with ``systemd-run``: its own cgroup, so it outlives
  whatever ran the module (ansible-pull from a timer whose cgroup is killed at exit); the unit
  appends to the same log and has the same umask, the pid file holds its MainPID, and the wait for
  ``vmm.ping`` is the same. ``auto`` and ``direct`` launch directly.
* liveness survives PID reuse: the pid file only counts when /proc/<pid>/cmdline names both the
  binary and the socket.
* stop ladder, always ending with socket and pid file removed: ACPI power button -> wait up to
  ``timeout`` -> vm.shutdown + vmm.shutdown -> SIGTERM -> SIGKILL. ``force`` starts at SIGTERM.
No Ansible imports here.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import shutil
import signal
import socket
import subprocess
import time

from ansible_collections.cloudhv.ch.plugins.module_utils.api import ChClient
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import (
    ChApiError,
    VmmError,
    VmmNotReachable,
)

POLL = 0.005          # launch wait: poll period (s)
STOP_POLL = 0.02      # stop ladder: poll period (s)
LOG_TAIL = 20         # lines of the CH log shown when a launch fails
VMM_UMASK = 0o177     # files and sockets the VMM creates: 0600


def read_pid(pid_file):
    try:
        with open(pid_file) as handle:
            text = handle.read().strip()
    except (IOError, OSError):
        return None
    try:
        pid = int(text)
    except ValueError:
        return None
    return pid if pid > 0 else None


def _task_dead(path):
    """A /proc/.../stat file says zombie or dead (the state letter follows the parenthesised
    command name), or cannot be read."""
    try:
        with open(path) as handle:
            stat = handle.read()
    except (IOError, OSError):
        return True
    try:
        return stat[stat.rindex(')') + 2] in 'ZX'
    except (ValueError, IndexError):
        return True


def proc_cmdline(pid):
    """argv of a live (non-zombie) process, or None."""
    if _task_dead('/proc/%d/stat' % pid):
        return None
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            raw = handle.read()
    except (IOError, OSError):
        return None
    if not raw:
        return None
    return [a.decode('utf-8', 'replace') for a in raw.rstrip(b'\0').split(b'\0')]


def process_gone(pid):
    """No such process, or only its zombie is left (its files are closed by then).

    A multi-threaded process (CH is one) whose main thread has exited shows as a zombie while its
    other threads are still exiting, and they hold its files (the API socket) until the last one
    is gone: every thread must be dead, not only the main one."""
    if not _task_dead('/proc/%d/stat' % pid):
        return False
    try:
        tasks = os.listdir('/proc/%d/task' % pid)
    except OSError:
        return True
    return all(_task_dead('/proc/%d/task/%s/stat' % (pid, tid)) for tid in tasks)


def cmdline_matches(argv, socket_path, binary=None):
    """Does this argv belong to a VMM for ``socket_path`` (and ``binary``, when given)?

    Interpreted stand-ins (a script with a shebang) show up as ``<interpreter> <script> ...``,
    so the binary may be argv[0] or argv[1]."""
    if not argv:
        return False
    if not any(a == socket_path or a.endswith('=' + socket_path) or
               ('path=%s' % socket_path) in a.split(',') for a in argv):
        return False
    if binary is None:
        return True
    want = os.path.realpath(binary)
    return any(os.path.realpath(a) == want for a in argv[:2])


def running_pid(pid_file, socket_path, binary=None):
    """The pid of the live VMM recorded in ``pid_file``, or None (dead, zombie, or PID reused)."""
    pid = read_pid(pid_file)
    if pid is None:
        return None
    if cmdline_matches(proc_cmdline(pid), socket_path, binary):
        return pid
    return None


def socket_accepts(path):
    """True when something accepts connections on the unix socket ``path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(0.5)
        sock.connect(path)
        return True
    except (OSError, IOError):
        return False
    finally:
        sock.close()


def log_tail(path, offset=0, lines=LOG_TAIL):
    try:
        with open(path, 'rb') as handle:
            handle.seek(offset)
            data = handle.read()
    except (IOError, OSError):
        return ''
    return '\n'.join(data.decode('utf-8', 'replace').splitlines()[-lines:])


def _unlink(path):
    try:
        os.unlink(path)
        return True
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
        return False


class Vmm(object):
    """One CH process, identified by its API socket and pid file."""

    def __init__(self, binary, socket_path, pid_file, log_file, api_timeout=30.0, launcher='auto'):
        self.binary = binary
        self.launcher = launcher or 'auto'
        self.socket_path = socket_path
        self.pid_file = pid_file
        self.log_file = log_file
        self.api_timeout = api_timeout
        self._client = None
        self._proc = None

    # -- liveness ---------------------------------------------------------------------------
    def pid(self):
        return running_pid(self.pid_file, self.socket_path, self.binary)

    def alive(self):
        return self.pid() is not None

    def exited_on_its_own(self):
        """No VMM runs, and the last one ended cleanly rather than being killed: CH removes its
        API socket when it exits by itself (a guest power-off, vmm.shutdown, SIGTERM), and a
        killed VMM leaves it. Our pid file must still be there (gone too: a reboot emptied
        run_dir, and nothing tells how the VMM ended)."""
        return (self.pid() is None and os.path.lexists(self.pid_file)
                and not os.path.lexists(self.socket_path))

    def _exited(self, pid):
        """True once the process is gone or a zombie. An exiting process loses its cmdline before
        it closes its files (the API socket), so an empty cmdline does not count as exited."""
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is not None
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return True
        except ChildProcessError:
            pass
        return process_gone(pid)

    def _wait_exit(self, pid, timeout):
        deadline = time.monotonic() + timeout
        while True:
            if self._exited(pid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(STOP_POLL)

    def client(self):
        if self._client is None:
            self._client = ChClient(self.socket_path, timeout=self.api_timeout)
        return self._client

    def close(self):
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- launch -----------------------------------------------------------------------------
    def clear_stale_socket(self):
        """Remove a socket file left by a dead VMM; refuse if a live process owns it."""
        if not os.path.exists(self.socket_path):
            return False
        pid = self.pid()
        if pid is not None:
            raise VmmError("a VMM (pid %d) is already running on %s" % (pid, self.socket_path))
        if socket_accepts(self.socket_path):
            raise VmmError("%s is in use by a process this collection did not start; refusing to "
                           "remove it" % self.socket_path)
        return _unlink(self.socket_path)

    def uses_systemd(self):
        return self.launcher == 'systemd'

    def unit_name(self):
        return unit_name(self.socket_path)

    def launch(self, args=(), env=None, start_timeout=10.0):
        """Start the VMM and return its pid once ``vmm.ping`` answers."""
        if not os.path.isfile(self.binary) or not os.access(self.binary, os.X_OK):
            raise VmmError("binary: %s is missing or not executable" % self.binary, option='binary')
        systemd_run = _systemd_run() if self.uses_systemd() else None
        self.clear_stale_socket()
        argv = [self.binary, '--api-socket', 'path=%s' % self.socket_path] + list(args)
        if systemd_run:
            return self._launch_systemd(systemd_run, argv, env, start_timeout)
        return self._launch_direct(argv, env, start_timeout)

    def _log_launch(self, argv, log_fd):
        """Mark the launch in the log; return the offset the VMM's own output starts at."""
        os.lseek(log_fd, 0, os.SEEK_END)
        os.write(log_fd, ('--- cloudhv.ch: launching %s at %s ---\n'
                          % (' '.join(argv), time.strftime('%Y-%m-%dT%H:%M:%S'))).encode())
        return os.lseek(log_fd, 0, os.SEEK_END)

    def _open_log(self):
        return os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def _launch_direct(self, argv, env, start_timeout):
        """A detached child: new session, stdin /dev/null, stdout and stderr to the log."""
        log_fd = self._open_log()
        try:
            offset = self._log_launch(argv, log_fd)
            # CH leaves the modes of what it creates to its umask: API, console and vsock
            # sockets, serial log files, snapshot files (guest memory). Owner only, always.
            old_umask = os.umask(VMM_UMASK)
            try:
                self._proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, close_fds=True,
                    start_new_session=True, cwd='/', env=env)
            except OSError as exc:
                raise VmmError("cannot start %s: %s" % (self.binary, exc))
            finally:
                os.umask(old_umask)
        finally:
            os.close(log_fd)
        proc = self._proc
        _write_pid(self.pid_file, proc.pid)

        def exit_status():
            code = proc.poll()
            return None if code is None else 'with status %s' % code
        return self._wait_ready(proc.pid, offset, start_timeout, exit_status)

    def _launch_systemd(self, systemd_run, argv, env, start_timeout):
        """A transient unit (its own cgroup, outside whatever ran the module) via systemd-run."""
        unit = self.unit_name()
        self._proc = None
        self._systemctl('reset-failed', unit)       # a failed unit of that name blocks systemd-run
        log_fd = self._open_log()
        try:
            offset = self._log_launch(argv, log_fd)
        finally:
            os.close(log_fd)
        cmd = [systemd_run, '--unit=%s' % unit, '--collect', '--quiet', '--no-ask-password',
               '--service-type=exec', '--working-directory=/',
               '--property=UMask=%04o' % VMM_UMASK, '--property=KillMode=mixed',
               '--property=StandardOutput=append:%s' % self.log_file,
               '--property=StandardError=append:%s' % self.log_file]
        cmd += ['--setenv=%s=%s' % item for item in sorted((env or {}).items())]
        code, _out, err = _run(cmd + ['--'] + argv)
        if code != 0:
            raise VmmError("launcher: systemd-run could not start %s as unit %s: %s\n(hint: launcher=systemd "
                           "needs systemd as PID 1 and the right to start system units; use launcher=direct "
                           "elsewhere)" % (self.binary, unit, err.strip() or 'exit status %s' % code),
                           option='launcher', log_file=self.log_file)
        pid = self._main_pid(unit)
        if pid is None:
            self._systemctl('reset-failed', unit)
            raise VmmError("%s (unit %s) exited before its API answered; last lines of %s:\n%s"
                           % (self.binary, unit, self.log_file, log_tail(self.log_file, offset)),
                           log_file=self.log_file)
        _write_pid(self.pid_file, pid)

        def exit_status():
            return '(unit %s)' % unit if self._exited(pid) else None
        return self._wait_ready(pid, offset, start_timeout, exit_status)

    def _main_pid(self, unit, timeout=1.0):
        """The unit's MainPID, polled briefly; None when it stays 0 (the process is gone)."""
        deadline = time.monotonic() + timeout
        while True:
            out = self._systemctl('show', '--property=MainPID', '--value', unit) or ''
            if out.isdigit() and int(out) > 0:
                return int(out)
            if time.monotonic() >= deadline:
                return None
            time.sleep(STOP_POLL)

    def _systemctl(self, *args):
        """systemctl's stdout (stripped), or None when it is missing or fails; never raises."""
        systemctl = shutil.which('systemctl')
        if systemctl is None:
            return None
        code, out, _err = _run([systemctl, '--no-ask-password'] + list(args))
        return out.strip() if code == 0 else None

    def _wait_ready(self, pid, offset, start_timeout, exit_status):
        """Wait until the API socket accepts and ``vmm.ping`` answers; chmod it 0600.

        ``exit_status()`` is None while the VMM runs, else how it exited (for the message)."""
        deadline = time.monotonic() + start_timeout
        while True:
            how = exit_status()
            if how is not None:
                _unlink(self.pid_file)
                self._forget_unit()
                raise VmmError("%s exited %s before its API answered; last lines of %s:\n%s"
                               % (self.binary, how, self.log_file, log_tail(self.log_file, offset)),
                               log_file=self.log_file)
            if socket_accepts(self.socket_path):
                try:
                    self.client().ping()
                    os.chmod(self.socket_path, 0o600)
                    return pid
                except (VmmNotReachable, ChApiError):
                    pass
            if time.monotonic() >= deadline:
                self._signal(pid, signal.SIGKILL)
                self._wait_exit(pid, 5)
                if self.uses_systemd():
                    self._systemctl('stop', self.unit_name())
                self._forget_unit()
                self.cleanup()
                raise VmmError("%s did not answer on %s within %ss; last lines of %s:\n%s"
                               % (self.binary, self.socket_path, start_timeout, self.log_file,
                                  log_tail(self.log_file, offset)), log_file=self.log_file)
            time.sleep(POLL)

    def _forget_unit(self):
        """systemd: drop a unit left in failed state (with --collect this is a safety net)."""
        if self.uses_systemd():
            self._systemctl('reset-failed', self.unit_name())

    # -- stop -------------------------------------------------------------------------------
    def _signal(self, pid, sig):
        try:
            os.kill(pid, sig)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise

    @staticmethod
    def _try(call):
        """(ok, result) of an API call whose failure only means "go to the next step"."""
        try:
            return True, call()
        except (ChApiError, VmmNotReachable):
            return False, None

    def stop(self, timeout=30.0, force=False, term_timeout=5.0, kill_timeout=5.0):
        """Run the stop ladder; return the steps taken (empty when nothing was running).

        Signals go to the pid, which is also a systemd unit's main process; a unit is then
        reset so that nothing of it is left."""
        try:
            return self._stop_ladder(timeout, force, term_timeout, kill_timeout)
        finally:
            self._forget_unit()

    def _stop_ladder(self, timeout, force, term_timeout, kill_timeout):
        steps = []
        pid = self.pid()
        if pid is None:
            self.cleanup()
            return steps
        if not force:
            client = self.client()
            info = self._try(client.info)[1]
            state = info.get('state') if isinstance(info, dict) else None
            # A paused guest cannot react to ACPI: go straight to vm.shutdown for it.
            if state == 'Running':
                steps.append('acpi-power-button')
                if self._try(client.power_button)[0] and self._wait_exit(pid, timeout):
                    self.close()
                    self.cleanup()
                    return steps
            steps.append('vmm-shutdown')
            self._try(client.shutdown)
            self._try(client.vmm_shutdown)
            self.close()
            if self._wait_exit(pid, term_timeout):
                self.cleanup()
                return steps
        self.close()
        steps.append('sigterm')
        self._signal(pid, signal.SIGTERM)
        if not self._wait_exit(pid, term_timeout):
            steps.append('sigkill')
            self._signal(pid, signal.SIGKILL)
            if not self._wait_exit(pid, kill_timeout):
                raise VmmError("VMM pid %d did not exit even after SIGKILL" % pid)
        self.cleanup()
        return steps

    def cleanup(self):
        """Remove socket and pid file unless a live VMM still owns them. True if removed."""
        if self.pid() is not None:
            return False
        removed = _unlink(self.socket_path)
        removed = _unlink(self.pid_file) or removed
        return removed


def unit_name(socket_path):
    """``cloudhv-vmm-<socket name without .sock>.service``; a character a unit name cannot hold
    becomes ``\\xNN`` (VM names never have one)."""
    base = os.path.basename(socket_path)
    if base.endswith('.sock'):
        base = base[:-len('.sock')]
    escaped = ''.join(c if c.isascii() and (c.isalnum() or c in ':_.-') else '\\x%02x' % ord(c)
                      for c in base)
    return 'cloudhv-vmm-%s.service' % escaped


def _systemd_run():
    path = shutil.which('systemd-run')
    if path is None:
        raise VmmError("launcher: systemd needs systemd-run, which is not on PATH (%s); install systemd "
                       "or use launcher=direct" % os.environ.get('PATH', ''), option='launcher')
    return path


def _run(cmd, timeout=60):
    """(status, stdout, stderr) of a helper command (systemd-run, systemctl); never raises."""
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return -1, '', str(exc)
    return proc.returncode, proc.stdout, proc.stderr


def _write_pid(path, pid):
    tmp = '%s.tmp.%d' % (path, os.getpid())
    with open(tmp, 'w') as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write('%d\n' % pid)
    os.rename(tmp, path)
