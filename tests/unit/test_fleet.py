"""ch_vms's engine side (module_utils/fleet.py) and the process-wide state it made matter: the
scheduler (parallel, a clone after its source, one failure per VM), the checks across items, the
per-bridge DHCP lock, and the VMM's umask set in the child only."""
import os
import stat
import sys
import threading
import time

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils import dhcp, fleet, process
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import OptionError, VmmError
from ansible_collections.cloudhv.ch.plugins.module_utils.store import Layout


def params(name, **extra):
    out = {'name': name, 'state': 'running', 'state_dir': '/nonexistent/s', 'run_dir': '/nonexistent/r'}
    out.update(extra)
    return out


def fake_result(name):
    return {'changed': True, 'changes': ['start the VM'], 'restart_required': False, 'warnings': [],
            'diff': {'before': {'state': 'absent'}, 'after': {'state': 'running'}}, 'vm': {'name': name}}


def test_parallel_runs_at_most_that_many_at_once_and_all_of_them():
    lock = threading.Lock()
    now = {'running': 0, 'peak': 0}

    def converge(p, check_mode, lock_timeout):
        with lock:
            now['running'] += 1
            now['peak'] = max(now['peak'], now['running'])
        time.sleep(0.05)
        with lock:
            now['running'] -= 1
        return fake_result(p['name'])

    items = [params('v%d' % i) for i in range(12)]
    results, failed = fleet.Fleet(items, parallel=3, converge=converge, validate=lambda p: None).run()
    assert sorted(results) == sorted(p['name'] for p in items) and failed == {}
    assert now['peak'] == 3


def test_one_failure_fails_only_its_vm_and_its_clones():
    order = []

    def converge(p, check_mode, lock_timeout):
        order.append(p['name'])
        if p['name'] == 'bad':
            raise VmmError("cannot start /x: broken")
        return fake_result(p['name'])

    items = [params('clone', clone_from={'vm': 'bad'}), params('bad'), params('ok1'), params('ok2')]
    runner = fleet.Fleet(items, parallel=2, converge=converge, validate=lambda p: None)
    runner.deferred = lambda p: False
    results, failed = runner.run()
    assert sorted(results) == ['ok1', 'ok2']
    assert failed['bad']['msg'] == 'cannot start /x: broken'
    assert 'cloned from bad, which failed' in failed['clone']['msg']
    assert 'clone' not in order, 'a clone of a failed VM must not be attempted'
    out = fleet.summarize(items, results, failed, [])
    assert [f['name'] for f in out['failed_vms']] == ['clone', 'bad'] and sorted(out['vms']) == ['ok1', 'ok2']


def test_a_clone_waits_for_its_source_even_when_listed_first():
    done = []

    def converge(p, check_mode, lock_timeout):
        if p['name'] == 'src':
            time.sleep(0.1)
        done.append(p['name'])
        return fake_result(p['name'])

    items = [params('copy', clone_from={'vm': 'src'}), params('src'), params('other')]
    runner = fleet.Fleet(items, parallel=4, converge=converge, validate=lambda p: None)
    runner.deferred = lambda p: False
    runner.run()
    assert done.index('src') < done.index('copy')


def test_validation_names_the_item_and_runs_before_any_converge():
    calls = []

    def validate(p):
        if p['name'] == 'bad':
            raise OptionError('memory', "'lots' is not a size")

    runner = fleet.Fleet([params('a'), params('b'), params('bad')], converge=lambda *a, **k: calls.append(a),
                         validate=validate)
    with pytest.raises(OptionError) as err:
        runner.validate()
    assert err.value.option == 'vms[2].memory' and 'bad' in err.value.msg
    assert calls == []


@pytest.mark.parametrize('items, option', [
    ([params('a'), params('b'), params('a')], 'vms[2].name'),
    ([params('a', networks=[{'bridge': 'br0', 'address': '10.0.0.5'}]),
      params('b', networks=[{'bridge': 'br1', 'address': '10.0.0.5'}, {'bridge': 'br0', 'address': '10.0.0.5'}])],
     'vms[1].networks[1].address'),
])
def test_checks_across_items(items, option):
    with pytest.raises(OptionError) as err:
        fleet.check_list(items)
    assert err.value.option == option


def test_prune_names_only_this_state_dirs_undeclared_vms(tmp_path):
    for state_dir, names in (('s1', ('keep', 'gone')), ('s2', ('other',))):
        for name in names:
            os.makedirs(str(tmp_path / state_dir / 'vms' / name))
            (tmp_path / state_dir / 'vms' / name / 'vm.json').write_text('{}')
    assert fleet.prune_names(Layout(str(tmp_path / 's1'), str(tmp_path / 'r')), ['keep', 'new']) == ['gone']


def _bridge(tmp_path):
    layout = Layout(str(tmp_path / 'state'), str(tmp_path / 'run'))
    paths = dhcp.Paths(layout, 'br0')
    for directory in (paths.hosts, paths.names):
        os.makedirs(directory)
    return layout, paths


def test_two_vms_claiming_one_address_at_once_one_wins(tmp_path):
    """The race ch_vms's threads (or two runs) could hit: both VMs passed check_vm_addresses before
    either wrote its hosts file. Under the per-bridge lock the second sees the first's claim."""
    layout, paths = _bridge(tmp_path)
    for attempt in range(20):
        barrier = threading.Barrier(2)
        outcome = {}

        def claim(vm, mac, address, barrier, outcome):
            changes = {'br0': {'%s.0' % vm: ('%s,%s,%s\n' % (mac, address, vm), '%s %s\n' % (address, vm))}}
            barrier.wait()
            try:
                dhcp.apply_vm_changes(layout, changes)
                outcome[vm] = 'ok'
            except OptionError as exc:
                outcome[vm] = exc.option

        address = '10.77.0.%d' % (10 + attempt)
        threads = [threading.Thread(target=claim, args=('a%d' % attempt, '02:00:00:00:00:01', address, barrier, outcome)),
                   threading.Thread(target=claim, args=('b%d' % attempt, '02:00:00:00:00:02', address, barrier, outcome))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcome.values()) == ['networks[0].address', 'ok'], outcome
        holders = list(dhcp.claimed_addresses(paths).values())
        assert len([h for h in holders if h.endswith(str(attempt))]) == 1


def test_vms_on_one_bridge_written_at_once_keep_every_entry(tmp_path):
    layout, paths = _bridge(tmp_path)

    def write(vm):
        dhcp.apply_vm_changes(layout, {'br0': {'%s.0' % vm: ('02:00:00:00:00:%02x,%s\n' % (int(vm[1:]), vm), None)}})

    threads = [threading.Thread(target=write, args=('v%d' % i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(dhcp.read_nic_files(paths)) == sorted('v%d.0' % i for i in range(40))


@pytest.mark.skipif(sys.version_info < (3, 9), reason='Popen(umask=) needs Python 3.9')
def test_spawn_detached_never_changes_this_process_umask(tmp_path):
    """os.umask() is process-wide: set around Popen, a directory another thread made meanwhile
    would get the VMM's 0177 (mode 0600, unusable as a directory)."""
    seen = set()
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            old = os.umask(0o022)
            os.umask(old)
            seen.add(old)

    original = os.umask(0o022)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        procs = []
        for index in range(30):
            proc, _offset = process.spawn_detached(['/bin/sh', '-c', 'umask > %s/u%d' % (tmp_path, index)],
                                                   str(tmp_path / 'log'), 0o177)
            procs.append(proc)
        for proc in procs:
            proc.wait()
    finally:
        stop.set()
        watcher.join()
        os.umask(original)
    assert seen == {0o022}, 'the module process umask changed: %s' % sorted(oct(u) for u in seen)
    assert all((tmp_path / ('u%d' % i)).read_text().strip() in ('0177', '177') for i in range(30))
    assert stat.S_IMODE(os.stat(str(tmp_path / 'u0')).st_mode) == 0o600
