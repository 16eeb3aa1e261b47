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
  (``cloudhv-vmm-<socket name>.<state_dir tag>.service``, see :func:`unit_name`) with
  ``systemd-run``: its own cgroup, so it outlives
  whatever ran the module (ansible-pull from a timer whose cgroup is killed at exit); the unit
  appends to the same log and has the same umask, the pid file holds its MainPID, and the wait for
  ``vmm.ping`` is the same. ``auto`` and ``direct`` launch directly.
* liveness survives PID reuse: the pid file only counts when /proc/<pid>/cmdline names both the
  binary and the socket (process.py holds the pid-file and liveness helpers, shared with the
  per-bridge dnsmasq of dhcp.py).
* stop ladder, always ending with socket and pid file removed: ACPI power button -> wait up to
  ``timeout`` -> vm.shutdown + vmm.shutdown -> SIGTERM -> SIGKILL. ``force`` starts at SIGTERM.
No Ansible imports here.
"""


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
from ansible_collections.cloudhv.ch.plugins.module_utils.fsutil import unlink_quiet as _unlink
from ansible_collections.cloudhv.ch.plugins.module_utils.process import (
    exited,
    log_launch,
    log_tail,
    open_log,
    running_pid,
    send_signal,
    spawn_detached,
    write_pid as _write_pid,
)
from ansible_collections.cloudhv.ch.plugins.module_utils.store import state_dir_tag

POLL = 0.005          # launch wait: poll period (s)
STOP_POLL = 0.02      # stop ladder: poll period (s)
VMM_UMASK = 0o177     # files and sockets the VMM creates: 0600


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


class Vmm:
    """One CH process, identified by its API socket and pid file.

    ``state_dir``: the VM's state_dir, which names its systemd unit (see :func:`unit_name`);
    without it the unit has the name of earlier releases, the same for a VM of the same name in
    every state_dir."""

    def __init__(self, binary, socket_path, pid_file, log_file, api_timeout=30.0, launcher='auto', state_dir=None):
        self.binary = binary
        self.launcher = launcher or 'auto'
        self.state_dir = state_dir
        self.socket_path = socket_path
        self.pid_file = pid_file
        self.log_file = log_file
        self.api_timeout = api_timeout
        self._client = None
        self._proc = None

    # -- liveness ---------------------------------------------------------------------------
    def pid(self):
        """The VM's live VMM: the process the pid file names, with the VM's own API socket on its
        command line (PID-reuse safe). Whichever binary runs it: after an upgrade that moved
        ``binary``, the old VMMs are still the VMs' to see and stop, never orphans."""
        return running_pid(self.pid_file, self.socket_path)

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
        return exited(pid, self._proc)

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
        return unit_name(self.socket_path, self.state_dir)

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

    def _launch_direct(self, argv, env, start_timeout):
        """A detached child: new session, stdin /dev/null, stdout and stderr to the log."""
        # CH leaves the modes of what it creates to its umask: API, console and vsock
        # sockets, serial log files, snapshot files (guest memory). Owner only, always.
        try:
            self._proc, offset = spawn_detached(argv, self.log_file, VMM_UMASK, env)
        except OSError as exc:
            raise VmmError("cannot start %s: %s" % (self.binary, exc))
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
        log_fd = open_log(self.log_file)
        try:
            offset = log_launch(argv, log_fd)
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
        send_signal(pid, sig)

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


def unit_name(socket_path, state_dir=None):
    """The VMM's transient unit: ``cloudhv-vmm-<socket name without .sock>.<tag>.service``, the tag
    being ``store.state_dir_tag(state_dir)`` (8 hex digits), so that VMs of the same name in two
    state_dirs have units of their own; a dot separates it because VM names never hold one. A
    character a unit name cannot hold becomes ``\\xNN`` (VM names never have one). At most 12 + 48
    + 9 + 8 = 77 characters for a VM name (systemd allows 255).

    Without ``state_dir``: ``cloudhv-vmm-<name>.service``, the name of earlier releases. A VMM
    started under that name is still found and stopped: it is found through the pid file and the
    socket, and stopped with the API and signals to its pid, never through its unit name; its unit
    was started with ``--collect``, so systemd drops it when the VMM exits, even after a failure."""
    base = os.path.basename(socket_path)
    if base.endswith('.sock'):
        base = base[:-len('.sock')]
    escaped = ''.join(c if c.isascii() and (c.isalnum() or c in ':_.-') else '\\x%02x' % ord(c)
                      for c in base)
    if state_dir is None:
        return 'cloudhv-vmm-%s.service' % escaped
    return 'cloudhv-vmm-%s.%s.service' % (escaped, state_dir_tag(state_dir))


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
