"""SIGKILL the VMM, then converge: the VM comes back (or goes away), and no stale socket, tap or
pid file remains."""
import os
import signal

import pytest

from tests.reliability.relutil import pid_gone, taps, wait_for


def vm_args(host, **extra):
    args = {'name': 'web1', 'kernel': host.kernel, 'cmdline': 'console=ttyS0', 'networks': [{'bridge': 'br0'}]}
    args.update(extra)
    return args


def crash(host, name='web1'):
    """SIGKILL the VMM: what a crash of CH leaves behind (socket file, pid file, tap) stays."""
    pid = host.pid(name)
    assert pid and host.vmm_pids(name) == [pid]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: pid_gone(pid), timeout=10, what='the VMM to die')
    assert os.path.exists(host.socket(name)) and os.path.exists(host.pid_file(name))
    return pid


@pytest.mark.parametrize('before,then', [('running', 'running'), ('paused', 'paused'), ('running', 'stopped'),
                                         ('paused', 'absent')])
def test_vmm_sigkill_then_converge(host_ns, before, then):
    host = host_ns
    first = host.vm(**vm_args(host, state=before))
    assert first['_rc'] == 0, first
    tap = first['vm']['networks'][0]['tap']
    old = crash(host)
    assert tap in taps(host.netns)

    res, _again, info, seen = host.converge('cloudhv.ch.ch_vm', vm_args(host, state=then), info_before=True)
    assert seen['web1']['state'] == 'crashed'
    assert res['changed'] is True, res
    if then in ('running', 'paused'):
        new = host.pid('web1')
        assert new and new != old and host.vmm_pids('web1') == [new]
        assert info['web1']['state'] == then and info['web1']['pid'] == new
        assert taps(host.netns) == {tap: 'br0'}
    else:
        assert host.vmm_pids() == []
        assert not os.path.exists(host.socket('web1')), 'stale socket left'
        assert not os.path.exists(host.pid_file('web1')), 'stale pid file left'
        assert taps(host.netns) == {}, 'stale tap left'
        assert info.get('web1', {}).get('state', 'absent') == then
    record = host.record('web1')
    assert (record is None) == (then == 'absent')
    if record:
        assert record['run_state'] == then
