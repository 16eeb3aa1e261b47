"""ch_vms under faults: an ansible-playbook running ch_vms SIGKILLed while several VMs are being
created at once (the next run converges them all), and ch_vm runs racing a ch_vms run on
overlapping VMs (each VM's lock serializes them; the host ends consistent). Style and helpers of
test_interrupted_runs.py and test_concurrent_runs.py."""
import os
import threading

from tests.reliability.relutil import read_requests, taps
from tests.reliability.test_interrupted_runs import assert_consistent

DELAY = '0.5'


def item(host, name, **extra):
    args = {'name': name, 'kernel': host.kernel, 'cmdline': 'console=ttyS0', 'networks': [{'bridge': 'br0'}],
            'disks': [{'path': os.path.join(host.vm_dir(name), 'root.raw'), 'size': '16M'}]}
    args.update(extra)
    return args


def test_killed_while_creating_several_vms_the_next_run_converges(host_ns):
    host = host_ns
    host.env = {'CHSIM_DELAY': DELAY, 'CHSIM_REQUEST_LOG': host.request_log}
    names = ['k%d' % i for i in range(4)]
    args = {'vms': [item(host, n) for n in names], 'parallel': 2}
    logged = host.interrupt([{'name': 'vms', 'cloudhv.ch.ch_vms': args}], 'vm.create', method='PUT')
    creates = [r for r in logged if r['endpoint'] == 'vm.create']
    assert creates, 'the kill landed after the first vm.create'
    booted = [r for r in read_requests(host.request_log) if r['endpoint'] == 'vm.boot']
    assert len(booted) < len(names), 'the kill landed before every VM was booted'
    for name in names:       # every record that exists parses (written before acting)
        record = host.record(name)
        assert record is None or record['run_state'] == 'running'
    first, _again, info = host.converge('cloudhv.ch.ch_vms', args)
    assert first['changed'] is True and first['failed_vms'] == []
    assert sorted(first['vms']) == names
    assert_consistent(host, info, dict((n, 'running') for n in names))


def test_ch_vm_and_ch_vms_on_overlapping_vms_at_once_end_consistent(host_ns):
    host = host_ns
    host.env = {'CHSIM_DELAY': '0.1'}
    names = ['c%d' % i for i in range(6)]
    assert host.task('cloudhv.ch.ch_vms', {'vms': [item(host, n, state='stopped') for n in names]})['_rc'] == 0
    singles = {'c1': 'paused', 'c3': 'running', 'c5': 'absent', 'c4': 'stopped'}
    fleet_args = {'vms': [item(host, n, state='running') for n in names], 'parallel': 3}
    out = {}

    def single(name, state):
        out[name] = host.adhoc('cloudhv.ch.ch_vm', item(host, name, state=state), timeout=240)

    def many():
        out['fleet'] = host.play([{'name': 'vms', 'cloudhv.ch.ch_vms': fleet_args}], timeout=240)
    threads = [threading.Thread(target=many)] + [threading.Thread(target=single, args=kv) for kv in singles.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in singles:
        res = out[name]
        assert res.rc == 0 or 'busy' in res.result.get('msg', ''), (name, res.result)
    fleet = out['fleet'].task('vms')
    for failure in fleet.get('failed_vms') or []:
        assert 'busy' in failure['msg'], failure       # the only failure a lock race may give
    # whatever order the locks gave, every VM is in a state one of the runs asked for, and the
    # records agree with what runs
    info = dict((vm['name'], vm) for vm in host.info())
    final = {}
    for name in names:
        state = info[name]['state'] if name in info else 'absent'
        asked = {'running'} | ({singles[name]} if name in singles else set())
        assert state in asked, (name, state, asked)
        final[name] = state
    assert_consistent(host, info, final)
    # and the next ch_vms run converges everything, the one after changes nothing
    first, _again, info = host.converge('cloudhv.ch.ch_vms', fleet_args)
    assert first['failed_vms'] == []
    assert_consistent(host, info, dict((n, 'running') for n in names))
    assert len(taps(host.netns)) == len(names)
