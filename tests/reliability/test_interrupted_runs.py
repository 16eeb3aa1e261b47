"""SIGKILL ansible-playbook in the middle of ch_vm start, stop and live resize, ch_snapshot (take and
restore) and a clone, with the simulator slowed down (CHSIM_DELAY: every PUT takes that long) so
the kill lands inside the operation: the run is killed as soon as the simulator has logged a given
request, while the next PUT is still in flight. "The run" is ansible-playbook's process group and
everything it started (ansible-core's workers call setsid(), so the module is in another group),
except the VMM, which runs in a session of its own and survives, as it would on a real host.

After the kill, and before anything repairs it: every record parses and no half-written snapshot
is visible. The next run converges, a run after it reports no change, no VM is left paused, and
no socket, pid file, tap or temporary file is left that the final state does not explain.
"""
import json
import os

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils import recovery
from ansible_collections.cloudhv.ch.plugins.module_utils import snapshot_store as snapmod
from ansible_collections.cloudhv.ch.plugins.module_utils.api import ChClient
from ansible_collections.cloudhv.ch.plugins.module_utils.vm import Vm
from tests.reliability.relutil import pid_gone, read_requests, taps, wait_for

DELAY = '0.5'
# where a test asserts that the kill landed while the VM was paused, the PUT in flight must
# outlast a test process starved on a busy machine
LONG_DELAY = '1.2'


def vm_args(host, name='web1', **extra):
    args = {'name': name, 'kernel': host.kernel, 'cmdline': 'console=ttyS0', 'networks': [{'bridge': 'br0'}],
            'disks': [{'path': os.path.join(host.vm_dir(name), 'root.raw'), 'size': '16M'}]}
    args.update(extra)
    return args


def vm_task(args):
    return [{'name': 'vm', 'cloudhv.ch.ch_vm': args}]


@pytest.fixture
def slow(host_ns):
    host_ns.env = {'CHSIM_DELAY': DELAY, 'CHSIM_REQUEST_LOG': host_ns.request_log}
    return host_ns


def assert_consistent(host, info, states):
    """Records parse and agree with what runs (``info``: ch_vm_info's VMs by name): one VMM per
    live VM, nothing left by dead ones, no VM paused that should run, no temporary files."""
    assert host.temp_files() == []
    expected_taps = {}
    seen = dict((name, vm['state']) for name, vm in info.items())
    names = sorted(states)
    for name in names:
        record = host.record(name)
        state = seen.get(name, 'absent')
        assert state == states[name], (name, state)
        if state == 'absent':
            assert record is None
            continue
        assert record['run_state'] == state
        nets = [n['tap'] for n in record['spec']['networks'] if n['managed_tap']]
        if state in ('running', 'paused'):
            assert host.vmm_pids(name) == [host.pid(name)], name
            expected_taps.update((t, 'br0') for t in nets)
        else:
            assert host.vmm_pids(name) == [], name
            assert not os.path.exists(host.socket(name)), 'stale socket of %s' % name
            assert not os.path.exists(host.pid_file(name)), 'stale pid file of %s' % name
        assert not os.path.exists(os.path.join(host_layout(host).vm_dir(name), recovery.MARKER))
    assert taps(host.netns) == expected_taps


def host_layout(host):
    from ansible_collections.cloudhv.ch.plugins.module_utils.store import Layout
    return Layout(host.state_dir, host.run_dir)


def live_state(host, name):
    """The VM's state straight from its VMM (no Ansible run needed)."""
    with ChClient(host.socket(name), timeout=30) as client:
        return client.info()['state']


def write_at(path, data):
    with open(path, 'r+b') as handle:
        handle.write(data)


def read_at(path, size):
    with open(path, 'rb') as handle:
        return handle.read(size)


def read_manifest(path):
    with open(os.path.join(path, 'manifest.json')) as handle:
        return json.load(handle)


def converge(host, args, module='cloudhv.ch.ch_vm'):
    """The next run converges, and a run after it changes nothing; (first result, info)."""
    first, _again, info = host.converge(module, args)
    return first, info


@pytest.mark.parametrize('endpoint', ['vmm.ping', 'vm.create'])
def test_killed_during_start(slow, endpoint):
    """Killed while vm.create (after the launch's ping) or vm.boot (after vm.create) is in flight."""
    host = slow
    args = vm_args(host)
    host.interrupt(vm_task(args), endpoint, method='GET' if endpoint == 'vmm.ping' else 'PUT')
    assert host.record('web1')['run_state'] == 'running'     # parses: written before acting
    info = converge(host, args)[1]
    assert_consistent(host, info, {'web1': 'running'})


@pytest.mark.parametrize('guest', ['slow-poweroff', 'ignores-acpi'])
def test_killed_during_stop(slow, guest):
    """Killed while the stop ladder waits for the guest: the guest powers off later by itself
    (the VMM exits on its own, leaving its pid file and taps), or never does."""
    host = slow
    host.env.update({'CHSIM_ACPI_DELAY': '2'} if guest == 'slow-poweroff' else {'CHSIM_IGNORE_ACPI': '1'})
    args = vm_args(host)
    assert host.vm(**args)['_rc'] == 0
    pid = host.pid('web1')
    stop = dict(args, state='stopped', stop_timeout=20)
    host.interrupt(vm_task(stop), 'vm.power-button')
    assert host.record('web1')['run_state'] == 'stopped'
    if guest == 'ignores-acpi':
        assert live_state(host, 'web1') == 'Running'    # the killed run never got to the next step
    else:
        assert not pid_gone(pid)                         # killed before the guest was off
        wait_for(lambda: pid_gone(pid), timeout=20, what='the guest to power off')
    info = converge(host, dict(stop, stop_timeout=1))[1]
    assert_consistent(host, info, {'web1': 'stopped'})


def test_killed_during_live_resize(slow):
    host = slow
    args = vm_args(host, cpus=1, max_cpus=4, memory='512M', memory_hotplug='1G')
    assert host.vm(**args)['_rc'] == 0
    pid = host.pid('web1')
    grown = dict(args, cpus=3, memory='1G')
    host.interrupt(vm_task(grown), 'vm.resize')          # the vCPU resize is done, RAM's in flight
    assert host.record('web1')['spec']['cpus'] == 3
    res, info = converge(host, grown)
    assert host.pid('web1') == pid and res['restart_required'] is False
    assert info['web1']['live_config']['cpus']['boot_vcpus'] == 3
    assert info['web1']['memory_actual_size'] == 1 << 30
    assert_consistent(host, info, {'web1': 'running'})


@pytest.mark.parametrize('endpoint', ['vm.pause', 'vm.snapshot'])
def test_killed_during_snapshot(slow, endpoint):
    """Killed while vm.snapshot (after vm.pause) or vm.resume (after vm.snapshot) is in flight:
    no partial snapshot is visible; the next run resumes the VM if it was left paused and drops
    the partial snapshot (ch_vm after the first kill, ch_snapshot itself after the second), and
    ch_snapshot then converges."""
    host = slow
    if endpoint == 'vm.pause':
        host.env['CHSIM_DELAY'] = LONG_DELAY
    args = vm_args(host)
    assert host.vm(**args)['_rc'] == 0
    pid = host.pid('web1')
    snap = {'vm': 'web1', 'name': 's1'}
    host.interrupt([{'name': 'snap', 'cloudhv.ch.ch_snapshot': snap}], endpoint)
    final = os.path.join(host.vm_dir('web1'), 'snapshots', 's1')
    existed = os.path.exists(final)
    if endpoint == 'vm.pause':
        assert live_state(host, 'web1') == 'Paused'     # the kill did land while it was paused
        assert not existed
    elif existed:                                        # killed after the rename: complete
        assert read_manifest(final)['name'] == 's1'
    tasks = [{'name': 'seen', 'cloudhv.ch.ch_vm_info': {}}]
    if endpoint == 'vm.pause':
        tasks.append({'name': 'repair', 'cloudhv.ch.ch_vm': args})
    tasks += [{'name': 'first', 'cloudhv.ch.ch_snapshot': snap}, {'name': 'again', 'cloudhv.ch.ch_snapshot': snap},
              {'name': 'info', 'cloudhv.ch.ch_vm_info': {}}]
    res = host.play(tasks)
    assert res.rc == 0, res
    listed = [s['name'] for s in res.task('seen')['vms'][0]['snapshots']]
    assert listed == (['s1'] if existed else [])
    if endpoint == 'vm.pause':
        assert any('left paused' in c for c in res.task('repair')['changes']), res.task('repair')
    assert res.task('again')['changed'] is False
    info = dict((vm['name'], vm) for vm in res.task('info')['vms'])
    assert read_manifest(final)['name'] == 's1'
    assert [s['name'] for s in info['web1']['snapshots']] == ['s1']
    assert host.pid('web1') == pid
    assert_consistent(host, info, {'web1': 'running'})


@pytest.mark.parametrize('endpoint', ['vm.shutdown', 'vmm.ping'])
def test_killed_during_restore(slow, endpoint):
    """Killed while the old VMM shuts down (disks not swapped yet), or while the new VMM restores
    (disks swapped, the old ones kept aside): the disk file is never missing, and the next ch_vm
    run leaves the VM running on either the snapshot's disk or the one it had, nothing between."""
    host = slow
    disk = os.path.join(str(host.tmp_path), 'data.raw')
    with open(disk, 'wb') as handle:
        handle.write(b'SNAPSHOT')
        handle.truncate(16 << 20)
    args = vm_args(host, disks=[{'path': disk}])
    res = host.play([{'name': 'vm', 'cloudhv.ch.ch_vm': args},
                     {'name': 'snap', 'cloudhv.ch.ch_snapshot': {'vm': 'web1', 'name': 's1'}}])
    assert res.rc == 0, res
    write_at(disk, b'LATER---')
    restore = {'vm': 'web1', 'name': 's1', 'state': 'restored'}
    start = len(read_requests(host.request_log))
    host.interrupt([{'name': 'restore', 'cloudhv.ch.ch_snapshot': restore}], endpoint,
                   method='GET' if endpoint == 'vmm.ping' else 'PUT')
    assert os.path.exists(disk) and host.record('web1')
    assert os.path.exists(os.path.join(host_layout(host).vm_dir('web1'), recovery.MARKER))      # killed mid-restore
    first, info = converge(host, args)
    content = read_at(disk, 8)
    assert content in (b'SNAPSHOT', b'LATER---'), content
    # Killed at the new VMM's first ping, the module has usually sent vm.restore already (the
    # VMM, which outlives the kill, then finishes it), but on a busy machine the kill can land
    # before it did: which one happened is in the request log (written once a request is done),
    # and the next run must keep the restored VM in the first case and put the old disk back in
    # the second. Killed during vm.shutdown, the restore was never sent.
    restored = [r for r in read_requests(host.request_log)[start:]
                if r['method'] == 'PUT' and r['endpoint'] == 'vm.restore' and r['status'] < 300]
    if restored:
        assert endpoint == 'vmm.ping', restored
        assert content == b'SNAPSHOT'
        assert 'finish an interrupted restore: remove the old disks kept aside' in first['changes'], first
    else:
        assert content == b'LATER---'
        assert "undo an interrupted restore: put the VM's disks back" in first['changes'], first
    leftovers = [f for f in os.listdir(os.path.dirname(disk)) if f.endswith(('.restore', '.pre-restore'))]
    assert leftovers == []
    assert_consistent(host, info, {'web1': 'running'})


@pytest.mark.parametrize('source', ['snapshot', 'fork'])
def test_killed_during_clone(slow, source):
    """Killed while the clone's VMM restores (from a snapshot), or while the source is paused for
    the fork's snapshot: the next run creates the clone, and the source runs on."""
    host = slow
    if source == 'snapshot':
        res = host.play([{'name': 'vm', 'cloudhv.ch.ch_vm': vm_args(host)},
                         {'name': 'snap', 'cloudhv.ch.ch_snapshot': {'vm': 'web1', 'name': 's1'}}])
        assert res.rc == 0, res
        clone = {'name': 'web2', 'clone_from': {'vm': 'web1', 'snapshot': 's1'}}
        host.interrupt(vm_task(clone), 'vmm.ping', method='GET')
    else:
        host.env['CHSIM_DELAY'] = LONG_DELAY
        assert host.vm(**vm_args(host))['_rc'] == 0
        clone = {'name': 'web2', 'clone_from': {'vm': 'web1'}}
        host.interrupt(vm_task(clone), 'vm.pause')
        assert live_state(host, 'web1') == 'Paused'     # left paused by the killed fork
    record = host.record('web2')          # absent or complete
    assert record is None or record['spec']['networks'][0]['tap'] != host.record('web1')['spec']['networks'][0]['tap']
    # the clone's marker says what to do: finish the clone (record written), or remove its
    # half-made files and clone again (no record)
    assert recovery.read_marker(Vm(host_layout(host), 'web2', None, host='-'))['op'] == 'clone'
    start = len(read_requests(host.request_log))
    first, info = converge(host, clone)
    if record is not None:
        assert any(c.startswith('finish an interrupted clone') for c in first['changes']), first['changes']
    else:
        assert 'remove what an interrupted clone left in %s' % host.vm_dir('web2') in first['changes']
    # never cold-booted: the clone's guest state comes from vm.restore
    puts = [r['endpoint'] for r in read_requests(host.request_log)[start:] if r['method'] == 'PUT']
    assert 'vm.restore' in puts and 'vm.boot' not in puts, puts
    # a fork's temporary snapshot is gone once the fork runs; a clone of s1 keeps its hard link
    assert os.path.exists(os.path.join(host.vm_dir('web2'), snapmod.CLONE_SOURCE)) == (source == 'snapshot')
    # the source was resumed by the clone's run (fork) or never paused (snapshot)
    assert_consistent(host, info, {'web1': 'running', 'web2': 'running'})
