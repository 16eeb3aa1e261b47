"""Ten concurrent `ansible` runs against the same VM, and against ten different VMs: every run ends
with a clear result (done, or a clear "busy" failure), the final state is consistent with the
records, and every record parses. Plus the lock itself: a run that removes the VM (and its lock
file) must not let two later runs in at the same time."""
import os
import threading
import time

from ansible_collections.cloudhv.ch.plugins.module_utils.store import Layout, VmLock
from tests.reliability.relutil import taps, wait_for

STATES = ['running', 'paused', 'stopped', 'running', 'absent', 'paused', 'running', 'stopped', 'running', 'paused']


def vm_args(host, name='web1', **extra):
    args = {'name': name, 'kernel': host.kernel, 'cmdline': 'console=ttyS0', 'networks': [{'bridge': 'br0'}]}
    args.update(extra)
    return args


def concurrently(host, arg_list):
    """Run one `ansible -m cloudhv.ch.ch_vm` per args dict, all at once; [(args, RunResult)]."""
    out = [None] * len(arg_list)

    def run(index):
        out[index] = host.adhoc('cloudhv.ch.ch_vm', arg_list[index], timeout=240)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(arg_list))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return list(zip(arg_list, out))


def assert_clear(args, res):
    """Done and in the requested state, or failed with a clear message (only "busy" is expected)."""
    assert res.results, 'no result at all (rc %s): %s %s' % (res.rc, res.stdout[-2000:], res.stderr[-2000:])
    result = res.result
    if res.rc == 0:
        assert isinstance(result.get('changed'), bool), result
        assert result['vm']['state'] == args['state'], result
        return 'ok'
    assert 'busy' in result.get('msg', ''), result
    return 'busy'


def test_ten_runs_on_one_vm(host_ns):
    host = host_ns
    assert host.vm(**vm_args(host, state='stopped'))['_rc'] == 0
    runs = concurrently(host, [vm_args(host, state=s) for s in STATES])
    outcomes = [assert_clear(args, res) for args, res in runs]
    assert outcomes.count('ok') >= 1
    record = host.record('web1')
    info = host.info()
    assert [vm['name'] for vm in info] == ([] if record is None else ['web1'])
    if record is None:
        final = 'absent'
        assert host.vmm_pids() == [] and taps(host.netns) == {}
    else:
        final = info[0]['state']
        assert record['run_state'] == final
        tap = record['spec']['networks'][0]['tap']
        if final in ('running', 'paused'):
            assert host.vmm_pids() == [host.pid('web1')]
            assert taps(host.netns) == {tap: 'br0'}
        else:
            assert host.vmm_pids() == [] and taps(host.netns) == {}
            assert not os.path.exists(host.socket('web1')) and not os.path.exists(host.pid_file('web1'))
    assert final in [a['state'] for (a, r) in runs if r.rc == 0]
    assert host.temp_files() == []


def test_ten_runs_on_ten_vms(host_ns):
    host = host_ns
    names = ['vm%d' % i for i in range(10)]
    runs = concurrently(host, [vm_args(host, name=n, state='running') for n in names])
    for args, res in runs:
        assert res.rc == 0 and res.result['changed'] is True, (args['name'], res.result)
    info = dict((vm['name'], vm) for vm in host.info())
    assert sorted(info) == names and all(vm['state'] == 'running' for vm in info.values())
    recorded_taps = {}
    for name in names:
        record = host.record(name)
        assert record['run_state'] == 'running'
        assert host.vmm_pids(name) == [host.pid(name)] == [info[name]['pid']]
        recorded_taps[record['spec']['networks'][0]['tap']] = 'br0'
    assert len(recorded_taps) == 10 and taps(host.netns) == recorded_taps
    macs = set(info[n]['networks'][0]['mac'] for n in names)
    assert len(macs) == 10
    gone = host.play([{'name': 'gone', 'cloudhv.ch.ch_vm': {'name': '{{ item }}', 'state': 'absent', 'purge': True},
                       'loop': names}])
    assert gone.rc == 0 and all(r['changed'] for r in gone.task('gone')['results']), gone
    assert host.info() == [] and host.vmm_pids() == [] and taps(host.netns) == {}
    assert os.listdir(host.run_dir) == [] and os.listdir(host.path('vms')) == []


def open_fds(path):
    """How many file descriptors of this process refer to ``path``."""
    count = 0
    for fd in os.listdir('/proc/self/fd'):
        try:
            if os.readlink('/proc/self/fd/%s' % fd) == path:
                count += 1
        except OSError:
            pass
    return count


def test_lock_survives_removal_of_its_file(tmp_path):
    """state=absent removes the lock file while holding the lock: a run already waiting on the old
    file and a run arriving after the removal must still not hold the VM's lock together."""
    layout = Layout(str(tmp_path / 'state'), str(tmp_path / 'run'))
    first = VmLock(layout, 'web1', timeout=10).acquire()
    holders = []
    inside = threading.Lock()
    overlaps = []

    def waiter(tag):
        with VmLock(layout, 'web1', timeout=10):
            if not inside.acquire(blocking=False):
                overlaps.append(tag)
                return
            holders.append(tag)
            time.sleep(0.3)
            inside.release()
    early = threading.Thread(target=waiter, args=('early',))
    early.start()
    # wait until early has the lock file open (and polls it): the file that is about to go
    wait_for(lambda: open_fds(layout.lock_path('web1')) >= 2, timeout=10, what='the waiter to open the lock')
    os.unlink(layout.lock_path('web1'))       # what state=absent does, holding the lock
    first.release()
    late = threading.Thread(target=waiter, args=('late',))
    late.start()
    early.join()
    late.join()
    assert overlaps == [] and sorted(holders) == ['early', 'late']
