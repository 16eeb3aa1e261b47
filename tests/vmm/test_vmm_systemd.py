"""vmm.py with launcher='systemd' against the simulator, through fake systemd-run and systemctl
(tests/support/fake_systemd.py; PID 1 here is not systemd). What a real systemd does with the same
command lines is covered by tests/real_ch/test_launcher_systemd.py on a host that has one."""
import os
import re
import signal
import stat
import time

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils.errors import VmmError
from ansible_collections.cloudhv.ch.plugins.module_utils.vmm import Vmm, unit_name
from ansible_collections.cloudhv.ch.plugins.module_utils.process import proc_cmdline
from ansible_collections.cloudhv.ch.plugins.module_utils.store import state_dir_tag

from tests.vmm.conftest import EXITS_AT_ONCE
from tests.support.fake_systemd import FakeSystemd
from tests.support.sim import sim_env

UNIT = 'cloudhv-vmm-vm.service'


@pytest.fixture
def fake(tmp_path, monkeypatch):
    fake = FakeSystemd.install(tmp_path / 'fake-systemd')
    monkeypatch.setenv('PATH', fake.path())
    monkeypatch.setenv('FAKE_SYSTEMD_DIR', fake.state_dir)
    return fake


@pytest.fixture
def make_unit_vmm(tmp_path, sim_binary, fake):
    made = []

    def factory(binary=None):
        run = tmp_path / 'run'
        run.mkdir(exist_ok=True)
        vmm = Vmm(binary or sim_binary, str(run / 'vm.sock'), str(run / 'vm.pid'), str(tmp_path / 'vm.log'),
                  api_timeout=5, launcher='systemd')
        made.append(vmm)
        return vmm

    yield factory
    for vmm in made:
        vmm.close()
        record = fake.unit(vmm.unit_name()) or {}
        for pid in (vmm.pid(), record.get('pid')):
            if pid and proc_cmdline(pid) is not None:
                os.kill(pid, signal.SIGKILL)


def option(flag, calls):
    """The values of ``--flag=`` in one systemd-run argv (before the command)."""
    head = calls[:calls.index('--')]
    return [a.split('=', 1)[1] for a in head if a.startswith(flag + '=')]


def test_unit_name():
    # without a state_dir: the name of earlier releases
    assert unit_name('/run/cloudhv/web-1.sock') == 'cloudhv-vmm-web-1.service'
    assert unit_name('/run/x/a b.sock') == 'cloudhv-vmm-a\\x20b.service'
    tag = state_dir_tag('/var/lib/cloudhv')
    assert re.match(r'^[0-9a-f]{8}$', tag)
    assert unit_name('/run/cloudhv/web-1.sock', '/var/lib/cloudhv') == 'cloudhv-vmm-web-1.%s.service' % tag
    assert unit_name('/run/x/a b.sock', '/s') == 'cloudhv-vmm-a\\x20b.%s.service' % state_dir_tag('/s')


UNIT_RE = re.compile(r'^[A-Za-z0-9:_.\\-]{1,247}\.service$')


def test_unit_names_differ_between_state_dirs(tmp_path):
    """Two state_dirs with a VM of the same name on one host: the name came from the VM name alone."""
    one = unit_name('/run/a/web1.sock', str(tmp_path / 'a'))
    two = unit_name('/run/b/web1.sock', str(tmp_path / 'b'))
    assert one != two
    for unit in (one, two):
        assert UNIT_RE.match(unit) and unit.startswith('cloudhv-vmm-web1.'), unit     # readable: the VM's name
    longest = unit_name('/run/cloudhv/%s.sock' % ('w' * 48), '/var/lib/cloudhv')
    assert UNIT_RE.match(longest) and len(longest) == 77
    # the same state_dir however it is spelled: the same unit
    (tmp_path / 'a').mkdir()
    os.symlink(str(tmp_path / 'a'), str(tmp_path / 'link'))
    assert unit_name('/run/a/web1.sock', str(tmp_path / 'link')) == one
    assert unit_name('/run/a/web1.sock', str(tmp_path / 'a') + '/') == one


def test_same_vm_name_in_two_state_dirs_runs_twice(tmp_path, sim_binary, fake):
    """Both VMMs run, each in its own unit (systemd-run refused the second: 'already loaded')."""
    made = []
    try:
        for where in ('a', 'b'):
            run = tmp_path / where / 'run'
            run.mkdir(parents=True)
            made.append(Vmm(sim_binary, str(run / 'web1.sock'), str(run / 'web1.pid'), str(tmp_path / where / 'ch.log'),
                            api_timeout=5, launcher='systemd', state_dir=str(tmp_path / where / 'state')))
            made[-1].launch()
        units = [vmm.unit_name() for vmm in made]
        assert units[0] != units[1]
        assert [fake.unit(u)['pid'] for u in units] == [vmm.pid() for vmm in made]
        assert all(vmm.client().ping() for vmm in made)
        for vmm in made:
            vmm.stop(force=True)
        assert [fake.unit(u) for u in units] == [None, None]
    finally:
        for vmm in made:
            vmm.close()
            if vmm.pid():
                os.kill(vmm.pid(), signal.SIGKILL)


def test_a_vmm_started_under_the_earlier_unit_name_is_found_and_stopped(make_unit_vmm, fake, tmp_path):
    """A VMM launched by an earlier release (unit cloudhv-vmm-<name>.service) is the VM's VMM for
    this release too: found through the pid file and socket, stopped with the API and signals, and
    its unit (started with --collect) is gone once it exits."""
    old = make_unit_vmm()
    pid = old.launch()
    assert fake.unit(UNIT)['pid'] == pid
    new = Vmm(old.binary, old.socket_path, old.pid_file, old.log_file, api_timeout=5, launcher='systemd',
              state_dir=str(tmp_path / 'state'))
    assert new.unit_name() != UNIT
    assert new.pid() == pid and new.client().ping()
    assert new.stop(timeout=5) == ['vmm-shutdown']         # no VM created: vmm.shutdown ends it
    assert proc_cmdline(pid) is None and new.pid() is None
    assert not os.path.exists(new.socket_path) and not os.path.exists(new.pid_file)
    assert fake.unit(UNIT) is None and fake.unit(new.unit_name()) is None
    new.close()


def test_launch_runs_a_transient_unit(make_unit_vmm, fake, sim_binary):
    vmm = make_unit_vmm()
    pid = vmm.launch()
    assert vmm.unit_name() == UNIT
    assert vmm.client().ping()
    assert vmm.pid() == pid == fake.unit(UNIT)['pid']
    assert int(open(vmm.pid_file).read()) == pid
    assert stat.S_IMODE(os.stat(vmm.socket_path).st_mode) == 0o600
    [run] = fake.calls('systemd-run')
    assert run[run.index('--') + 1:] == [sim_binary, '--api-socket', 'path=%s' % vmm.socket_path]
    assert option('--unit', run) == [UNIT]
    assert {'--collect', '--quiet', '--no-ask-password'} <= set(run)
    assert option('--working-directory', run) == ['/']
    assert sorted(option('--property', run)) == sorted([
        'UMask=0177', 'KillMode=mixed',
        'StandardOutput=append:%s' % vmm.log_file, 'StandardError=append:%s' % vmm.log_file])
    assert option('--setenv', run) == []          # no env given: the unit gets the manager's
    # the launch line is in the log before the unit's own output; the unit appends to it
    assert os.readlink('/proc/%d/fd/1' % pid) == vmm.log_file
    assert os.getsid(pid) == pid
    with open(vmm.log_file) as handle:
        assert handle.readline().startswith('--- cloudhv.ch: launching %s ' % sim_binary)
    # a failed unit of that name would block systemd-run: reset first, then run, then read MainPID
    calls = fake.calls()
    assert calls[0][-2:] == ['reset-failed', UNIT]
    assert calls[1] == run
    assert calls[2][-4:] == ['show', '--property=MainPID', '--value', UNIT]


def test_env_is_passed_with_setenv(make_unit_vmm, fake):
    vmm = make_unit_vmm()
    vmm.launch(env={'CHSIM_IGNORE_ACPI': '1', 'RUST_BACKTRACE': '1'})
    [run] = fake.calls('systemd-run')
    assert option('--setenv', run) == ['CHSIM_IGNORE_ACPI=1', 'RUST_BACKTRACE=1']
    assert fake.unit(UNIT)['environment'] == {'CHSIM_IGNORE_ACPI': '1', 'RUST_BACKTRACE': '1'}


def test_stop_ladder_leaves_nothing(make_unit_vmm, fake, kernel):
    vmm = make_unit_vmm()
    pid = vmm.launch(env=sim_env(CHSIM_IGNORE_ACPI=1))
    api = vmm.client()
    api.create({'payload': {'kernel': kernel}, 'console': {'mode': 'Off'}, 'serial': {'mode': 'Null'}})
    api.boot()
    steps = vmm.stop(timeout=0.3)
    assert steps == ['acpi-power-button', 'vmm-shutdown']
    assert proc_cmdline(pid) is None
    assert not os.path.exists(vmm.socket_path) and not os.path.exists(vmm.pid_file)
    assert fake.calls('systemctl')[-1][-2:] == ['reset-failed', UNIT]
    assert fake.unit(UNIT) is None


def test_forced_stop_signals_the_main_pid(make_unit_vmm, fake):
    vmm = make_unit_vmm()
    pid = vmm.launch()
    assert vmm.stop(force=True) == ['sigterm']
    assert proc_cmdline(pid) is None and vmm.pid() is None
    assert not os.path.exists(vmm.socket_path) and not os.path.exists(vmm.pid_file)
    assert fake.unit(UNIT) is None


def test_relaunch_after_a_crash(make_unit_vmm, fake):
    vmm = make_unit_vmm()
    pid = vmm.launch()
    os.kill(pid, signal.SIGKILL)
    assert vmm._wait_exit(pid, 5)
    new_pid = vmm.launch()
    assert new_pid != pid and vmm.client().ping()
    assert len(fake.calls('systemd-run')) == 2


def test_a_failed_unit_is_reset_before_launch(make_unit_vmm, fake):
    fake.seed_failed_unit(UNIT)
    vmm = make_unit_vmm()
    assert vmm.launch() == fake.unit(UNIT)['pid']


def test_a_unit_name_in_use_is_refused_with_systemds_message(make_unit_vmm, fake, tmp_path, sim_binary):
    vmm = make_unit_vmm()
    vmm.launch()
    other_run = tmp_path / 'other'
    other_run.mkdir()
    other = Vmm(sim_binary, str(other_run / 'vm.sock'), str(other_run / 'vm.pid'), str(tmp_path / 'other.log'),
                api_timeout=5, launcher='systemd')
    with pytest.raises(VmmError) as err:
        other.launch()
    assert 'already loaded' in err.value.msg and 'launcher' in err.value.msg
    assert vmm.client().ping()


def test_missing_systemd_run_names_the_option(make_unit_vmm, monkeypatch, tmp_path):
    empty = tmp_path / 'empty-bin'
    empty.mkdir()
    monkeypatch.setenv('PATH', str(empty))
    vmm = make_unit_vmm()
    with pytest.raises(VmmError) as err:
        vmm.launch()
    assert err.value.msg.startswith('launcher:') and 'systemd-run' in err.value.msg
    assert err.value.details['option'] == 'launcher'
    assert not os.path.exists(vmm.pid_file) and not os.path.exists(vmm.log_file)


def test_failing_systemd_run_passes_its_message_through(make_unit_vmm, fake, monkeypatch):
    message = 'System has not been booted with systemd as init system (PID 1). Can\'t operate.'
    monkeypatch.setenv('FAKE_SYSTEMD_RUN_FAIL', message)
    vmm = make_unit_vmm()
    with pytest.raises(VmmError) as err:
        vmm.launch()
    assert message in err.value.msg
    assert 'launcher=direct' in err.value.msg and err.value.details['option'] == 'launcher'
    assert not os.path.exists(vmm.pid_file)


def test_vmm_exiting_at_once_shows_the_log_tail(make_unit_vmm, fake, stand_in):
    vmm = make_unit_vmm(binary=stand_in('bad-ch', EXITS_AT_ONCE))
    started = time.monotonic()
    with pytest.raises(VmmError) as err:
        vmm.launch(start_timeout=30)
    assert time.monotonic() - started < 10
    assert 'unexpected argument found: frobnicate' in err.value.msg
    assert UNIT in err.value.msg
    assert not os.path.exists(vmm.pid_file)


def test_vmm_exiting_during_the_wait_shows_the_log_tail(make_unit_vmm, fake, stand_in):
    vmm = make_unit_vmm(binary=stand_in('slow-ch', 'sleep 1.5\necho "error: KVM is not available" >&2\nexit 1\n'))
    with pytest.raises(VmmError) as err:
        vmm.launch(start_timeout=30)
    assert 'KVM is not available' in err.value.msg and 'exited' in err.value.msg
    assert not os.path.exists(vmm.pid_file)
    assert fake.unit(UNIT) is None


def test_timeout_kills_and_stops_the_unit(make_unit_vmm, fake, stand_in):
    vmm = make_unit_vmm(binary=stand_in('mute-ch', 'echo "waiting forever"\nexec sleep 60\n'))
    with pytest.raises(VmmError) as err:
        vmm.launch(start_timeout=1)
    assert 'did not answer' in err.value.msg and 'waiting forever' in err.value.msg
    assert ['--no-ask-password', 'stop', UNIT] in fake.calls('systemctl')
    assert not os.path.exists(vmm.pid_file)
    assert fake.unit(UNIT) is None
