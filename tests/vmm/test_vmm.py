"""vmm.py against the simulator: launch, failing launches, the stop ladder, stale sockets, PID reuse."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils.errors import VmmError
from ansible_collections.cloudhv.ch.plugins.module_utils.process import proc_cmdline, process_gone, running_pid
from ansible_collections.cloudhv.ch.plugins.module_utils.vmm import Vmm

from tests.vmm.conftest import EXITS_AT_ONCE
from tests.support.sim import sim_env


def boot(vmm, kernel):
    api = vmm.client()
    api.create({'payload': {'kernel': kernel}, 'console': {'mode': 'Off'}, 'serial': {'mode': 'Null'}})
    api.boot()


def test_launch_is_detached_and_recorded(make_vmm):
    vmm = make_vmm()
    pid = vmm.launch()
    assert vmm.pid() == pid
    assert int(open(vmm.pid_file).read()) == pid
    assert os.path.exists(vmm.socket_path)
    # detached: its own session, stdin from /dev/null
    assert os.getsid(pid) == pid
    assert os.readlink('/proc/%d/fd/0' % pid) == '/dev/null'
    # no fds inherited from us beyond 0-2 and what CH opens itself (the log is stdout/stderr)
    assert os.readlink('/proc/%d/fd/1' % pid) == vmm.log_file
    argv = proc_cmdline(pid)
    assert 'path=%s' % vmm.socket_path in argv


def test_launch_of_a_binary_that_exits_at_once_shows_the_log_tail(make_vmm, stand_in):
    vmm = make_vmm(binary=stand_in('bad-ch', EXITS_AT_ONCE))
    started = time.monotonic()
    with pytest.raises(VmmError) as err:
        vmm.launch(start_timeout=30)
    assert time.monotonic() - started < 10  # failed fast, not at the timeout
    assert 'status 3' in err.value.msg
    assert 'unexpected argument found: frobnicate' in err.value.msg
    assert not os.path.exists(vmm.pid_file)


def test_missing_binary_is_a_clear_error(make_vmm, tmp_path):
    vmm = make_vmm(binary=str(tmp_path / 'nope'))
    with pytest.raises(VmmError) as err:
        vmm.launch()
    assert 'missing or not executable' in err.value.msg


def test_stop_honoured_acpi_sends_no_signal(make_vmm, kernel):
    vmm = make_vmm()
    vmm.launch()
    boot(vmm, kernel)
    steps = vmm.stop(timeout=10)
    assert steps == ['acpi-power-button']
    assert not os.path.exists(vmm.socket_path) and not os.path.exists(vmm.pid_file)


def test_stop_escalates_when_the_guest_ignores_acpi(make_vmm, kernel):
    vmm = make_vmm()
    vmm.launch(env=sim_env(CHSIM_IGNORE_ACPI=1))
    boot(vmm, kernel)
    started = time.monotonic()
    steps = vmm.stop(timeout=0.5)
    assert steps == ['acpi-power-button', 'vmm-shutdown']
    assert time.monotonic() - started < 8
    assert vmm.pid() is None
    assert not os.path.exists(vmm.socket_path) and not os.path.exists(vmm.pid_file)


def test_delayed_acpi_shutdown_is_waited_for(make_vmm, kernel):
    vmm = make_vmm()
    vmm.launch(env=sim_env(CHSIM_ACPI_DELAY=0.5))
    boot(vmm, kernel)
    assert vmm.stop(timeout=10) == ['acpi-power-button']


def test_force_stop_of_a_process_ignoring_sigterm_ends_with_sigkill(make_vmm, kernel):
    vmm = make_vmm()
    pid = vmm.launch(env=sim_env(CHSIM_IGNORE_SIGTERM=1))
    boot(vmm, kernel)
    steps = vmm.stop(force=True, term_timeout=0.5)
    assert steps == ['sigterm', 'sigkill']
    assert proc_cmdline(pid) is None
    assert not os.path.exists(vmm.socket_path) and not os.path.exists(vmm.pid_file)


def test_sigterm_is_enough_for_a_normal_process(make_vmm):
    vmm = make_vmm()
    vmm.launch()
    assert vmm.stop(force=True) == ['sigterm']


def test_stale_socket_after_sigkill_is_removed_before_launch(make_vmm):
    vmm = make_vmm()
    pid = vmm.launch()
    os.kill(pid, signal.SIGKILL)
    assert vmm._wait_exit(pid, 5)
    assert os.path.exists(vmm.socket_path)      # SIGKILL leaves the socket file behind
    assert vmm.pid() is None
    new_pid = vmm.launch()                       # the simulator fails on a stale socket by default
    assert new_pid != pid and vmm.client().ping()


def test_socket_owned_by_someone_else_is_not_removed(make_vmm):
    vmm = make_vmm()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(vmm.socket_path)
    listener.listen(1)
    try:
        with pytest.raises(VmmError) as err:
            vmm.launch()
        assert 'refusing to remove' in err.value.msg
        assert os.path.exists(vmm.socket_path)
    finally:
        listener.close()


def test_pid_reuse_does_not_count_as_our_vmm(make_vmm, tmp_path):
    vmm = make_vmm()
    other = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        with open(vmm.pid_file, 'w') as handle:
            handle.write('%d\n' % other.pid)
        assert vmm.pid() is None
        assert running_pid(vmm.pid_file, vmm.socket_path) is None
        assert vmm.stop() == []                  # nothing of ours runs: nothing is signalled
        assert other.poll() is None
        pid = vmm.launch()
        assert pid != other.pid
    finally:
        other.kill()
        other.wait()


def test_a_vmm_of_another_binary_is_still_the_vms(make_vmm, tmp_path, sim_binary):
    """The VM's VMM is the live process its pid file names with the VM's API socket on its
    command line, whichever binary runs it: a playbook that points ``binary`` at a new CH (an
    upgrade) still sees and stops the VMMs the old one started. (Found while benchmarking the
    real CH: ch_vm state=absent with another binary called the live VMM's socket and pid file
    stale, removed them and left the VMM running, unreachable.)"""
    vmm = make_vmm()
    pid = vmm.launch()
    other = str(tmp_path / 'cloud-hypervisor-new')
    shutil.copy(sim_binary, other)
    upgraded = Vmm(other, vmm.socket_path, vmm.pid_file, str(tmp_path / 'new.log'), api_timeout=5)
    assert upgraded.pid() == pid
    assert upgraded.stop(timeout=5) and process_gone(pid)


def test_liveness_needs_binary_and_socket(make_vmm, sim_binary):
    vmm = make_vmm()
    pid = vmm.launch()
    assert running_pid(vmm.pid_file, vmm.socket_path, sim_binary) == pid
    assert running_pid(vmm.pid_file, vmm.socket_path + '.other', sim_binary) is None
    assert running_pid(vmm.pid_file, vmm.socket_path, '/usr/bin/true') is None


LINGER = r"""
import ctypes, os, socket, sys, threading, time
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.bind(sys.argv[1])
sock.listen(1)
def linger():
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.01)
threading.Thread(target=linger).start()
print('ready', flush=True)
ctypes.CDLL(None).pthread_exit(None)       # the main thread leaves, the other one keeps the files
"""


def test_a_zombie_main_thread_with_live_threads_is_not_gone(tmp_path):
    """CH is multi-threaded: after its main thread exits, the process shows as a zombie while the
    other threads still run and still hold the API socket. That is not "gone" yet."""
    sock, release = str(tmp_path / 'api.sock'), str(tmp_path / 'release')
    proc = subprocess.Popen([sys.executable, '-c', LINGER, sock, release], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == 'ready'
        deadline = time.monotonic() + 10
        while not process_gone(proc.pid) and time.monotonic() < deadline:
            with open('/proc/%d/stat' % proc.pid) as handle:
                if handle.read().rsplit(')', 1)[1].split()[0] == 'Z':
                    break              # the main thread is a zombie now
            time.sleep(0.01)
        assert not process_gone(proc.pid)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        assert probe.connect_ex(sock) == 0          # the files are still open
        probe.close()
        open(release, 'w').close()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert process_gone(proc.pid)
