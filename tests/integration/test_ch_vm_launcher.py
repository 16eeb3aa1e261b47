"""ch_vm ``launcher: systemd`` (and ch_snapshot on such a VM) through real ansible-playbook runs
against the simulator, with the fake systemd-run and systemctl of tests/support/fake_systemd.py
first on the module's PATH (the local connection passes the controller's environment on)."""
import json
import os

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils import vmm
from ansible_collections.cloudhv.ch.plugins.module_utils.process import proc_cmdline

from tests.support.ansible import BIN
from tests.support.fake_systemd import FakeSystemd


def unit(hv):
    """web1's VMM unit: its name carries the tag of the state_dir."""
    return vmm.unit_name(os.path.join(hv.run_dir, 'web1.sock'), hv.state_dir)


@pytest.fixture
def fake(hv, tmp_path):
    fake = FakeSystemd.install(tmp_path / 'fake-systemd')
    hv.env.update(fake.env(BIN + os.pathsep + os.environ.get('PATH', '')))
    yield fake
    record = fake.unit(unit(hv))
    if record and proc_cmdline(record['pid']):
        os.kill(record['pid'], 9)


def vm_args(hv, **extra):
    args = {'name': 'web1', 'kernel': hv.kernel, 'cmdline': 'console=ttyS0', 'launcher': 'systemd',
            'disks': [{'path': os.path.join(hv.state_dir, 'vms', 'web1', 'root.raw'), 'size': '16M'}]}
    args.update(extra)
    return args


def run(hv, *tasks):
    """Several tasks in one ansible-playbook run: (name, module, args[, check])."""
    res = hv.play([dict({'name': t[0], t[1]: t[2]}, **({'check_mode': True} if len(t) > 3 and t[3] else {}))
                   for t in tasks])
    assert res.rc == 0, res
    return dict((t[0], res.task(t[0])) for t in tasks)


def record(hv):
    with open(os.path.join(hv.state_dir, 'vms', 'web1', 'vm.json')) as handle:
        return json.load(handle)


def test_launcher_systemd_lifecycle_and_snapshot_restore(hv, fake):
    vm = 'cloudhv.ch.ch_vm'
    out = run(hv, ('predict', vm, vm_args(hv), True), ('start', vm, vm_args(hv)),
              ('again', vm, vm_args(hv)), ('predict again', vm, vm_args(hv), True))
    assert out['predict']['changed'] is True
    assert out['start']['changed'] is True and out['start']['changes'] == out['predict']['changes']
    pid = out['start']['vm']['pid']
    assert pid and pid == fake.unit(unit(hv))['pid'] == hv.pid('web1')
    assert out['again']['changed'] is False and out['again']['vm']['pid'] == pid
    assert out['predict again']['changed'] is False
    [launch] = fake.calls('systemd-run')                  # check mode started nothing
    assert '--unit=%s' % unit(hv) in launch and launch[launch.index('--') + 1] == hv.binary
    assert record(hv)['launcher'] == 'systemd'
    assert 'cloudhv.ch: launching' in open(out['start']['vm']['log_file']).read()

    out = run(hv, ('stop', vm, vm_args(hv, state='stopped')), ('start', vm, vm_args(hv)))
    assert out['stop']['changed'] is True and proc_cmdline(pid) is None
    assert ['--no-ask-password', 'reset-failed', unit(hv)] in fake.calls('systemctl')
    assert out['start']['changed'] is True
    pid = out['start']['vm']['pid']
    assert pid == fake.unit(unit(hv))['pid'] and len(fake.calls('systemd-run')) == 2

    # ch_snapshot has no launcher option: it restarts the VMM the recorded way
    snap = {'vm': 'web1', 'name': 's1'}
    out = run(hv, ('snap', 'cloudhv.ch.ch_snapshot', dict(snap, state='present')),
              ('restore', 'cloudhv.ch.ch_snapshot', dict(snap, state='restored')),
              ('info', 'cloudhv.ch.ch_vm_info', {'name': 'web1'}))
    assert out['snap']['changed'] is True and out['restore']['changed'] is True
    launches = fake.calls('systemd-run')
    assert len(launches) >= 3 and all('--unit=%s' % unit(hv) in a for a in launches)
    new_pid = out['info']['vms'][0]['pid']
    assert out['info']['vms'][0]['state'] == 'running'
    assert new_pid != pid and new_pid == fake.unit(unit(hv))['pid'] == hv.pid('web1')
    assert record(hv)['launcher'] == 'systemd'

    # a ch_vm task that leaves launcher unset keeps the recorded one: a new VMM goes through
    # systemd-run again, and the record keeps saying so
    unset = dict(vm_args(hv))
    del unset['launcher']
    out = run(hv, ('stop', vm, dict(unset, state='stopped')), ('start', vm, unset), ('again', vm, unset))
    assert out['stop']['changed'] is True and out['start']['changed'] is True
    assert out['again']['changed'] is False
    assert len(fake.calls('systemd-run')) == len(launches) + 1
    new_pid = out['again']['vm']['pid']
    assert new_pid == fake.unit(unit(hv))['pid'] and record(hv)['launcher'] == 'systemd'

    out = run(hv, ('remove', vm, {'name': 'web1', 'state': 'absent', 'purge': True}))
    assert out['remove']['changed'] is True and proc_cmdline(new_pid) is None
    assert fake.unit(unit(hv)) is None


def test_systemd_run_failing_is_reported_as_is(hv, fake):
    message = "System has not been booted with systemd as init system (PID 1). Can't operate."
    res = hv.vm(env={'FAKE_SYSTEMD_RUN_FAIL': message}, **vm_args(hv))
    assert res['_rc'] != 0 and message in res['msg'] and 'launcher' in res['msg'], res
    assert hv.pid('web1') is None
