"""A disk that fills up (state_dir on a small tmpfs) while ch_vm writes the record and while
ch_snapshot takes a snapshot: a clear error, the previous record intact, the VM still running
(not paused), nothing half-written left, and the next run after space is freed converges."""
import os

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils import recovery
from ansible_collections.cloudhv.ch.plugins.module_utils.store import Layout
from tests.reliability.relutil import Host

MIB = 1 << 20


@pytest.fixture
def small(tmp_path, sim_binary, tmpfs):
    """A host whose state_dir lives on an 8 MiB tmpfs."""
    mount = tmpfs('8m')
    host = Host(tmp_path, sim_binary, state_dir=os.path.join(mount, 'state'))
    host.filler = os.path.join(mount, 'filler')
    try:
        yield host
    finally:
        host.cleanup()


def fill(host, leave=0):
    """Fill the file system of state_dir until only about ``leave`` bytes are free."""
    st = os.statvfs(host.state_dir)
    want = max(0, st.f_bavail * st.f_frsize - leave)
    with open(host.filler, 'ab') as handle:
        try:
            while want > 0:
                chunk = min(want, MIB)
                handle.write(b'\xa5' * chunk)
                handle.flush()
                want -= chunk
        except OSError:
            pass
    return os.statvfs(host.state_dir).f_bavail * st.f_frsize


def snapshot_of_files(host):
    """{path: bytes} of every regular file in the VM's directory (the record among them)."""
    out = {}
    for root, _dirs, files in os.walk(host.vm_dir('web1')):
        for name in files:
            path = os.path.join(root, name)
            if name in ('ch.log', 'serial.log'):     # the VMM's own output may grow
                continue
            with open(path, 'rb') as handle:
                out[path] = handle.read()
    return out


def vm_args(host, **extra):
    args = {'name': 'web1', 'kernel': host.kernel, 'cmdline': 'console=ttyS0', 'cpus': 1, 'max_cpus': 4,
            'disks': [{'path': os.path.join(host.vm_dir('web1'), 'root.raw'), 'size': '4M'}]}
    args.update(extra)
    return args


def assert_clear_failure(res, *fragments):
    assert res['_rc'] != 0 and res['_status'] == 'failed', res
    msg = res['msg']
    assert 'Unexpected error' not in msg and 'Traceback' not in msg and 'MODULE FAILURE' not in msg, msg
    assert 'no space left' in msg.lower(), msg
    for fragment in fragments:
        assert fragment in msg, msg


def run(host, task, name):
    """One playbook: ``task`` (errors ignored), then ch_vm_info; (task result, task status, web1's info)."""
    res = host.play([dict(task, name=name, ignore_errors=True), {'name': 'info', 'cloudhv.ch.ch_vm_info': {'name': 'web1'}}])
    status = [r['status'] for r in res.results if r['task'] == name][-1]
    result = res.task(name)
    result['_rc'] = 0 if status == 'ok' else 2
    result['_status'] = status
    return result, res.task('info')['vms'][0]


def test_full_disk_during_record_write(small):
    host = small
    assert host.vm(**vm_args(host))['_rc'] == 0
    pid = host.pid('web1')
    before = snapshot_of_files(host)
    fill(host)
    res, vm = run(host, {'cloudhv.ch.ch_vm': vm_args(host, cpus=2)}, 'grow')
    assert_clear_failure(res, 'vm.json')
    assert snapshot_of_files(host) == before           # the previous record, byte for byte
    assert host.record('web1')['spec']['cpus'] == 1 and host.temp_files() == []
    assert host.pid('web1') == pid and host.vmm_pids('web1') == [pid]
    assert vm['state'] == 'running' and vm['live_config']['cpus']['boot_vcpus'] == 1
    os.unlink(host.filler)
    res, vm = run(host, {'cloudhv.ch.ch_vm': vm_args(host, cpus=2)}, 'grow')
    assert res['_rc'] == 0 and res['changed'] and host.pid('web1') == pid, res
    assert vm['live_config']['cpus']['boot_vcpus'] == 2


@pytest.mark.parametrize('leave', [0, MIB], ids=['full-before', 'full-during-disk-copy'])
def test_full_disk_during_snapshot(small, leave):
    """Full from the start (the in-progress marker cannot be written), or filling up while the
    VM's disk (2 MiB of data) is copied into the snapshot, with the VM paused."""
    host = small
    assert host.vm(**vm_args(host))['_rc'] == 0
    with open(os.path.join(host.vm_dir('web1'), 'root.raw'), 'r+b') as handle:
        handle.write(os.urandom(2 * MIB))
    pid = host.pid('web1')
    before = snapshot_of_files(host)
    fill(host, leave)
    snap = {'cloudhv.ch.ch_snapshot': {'vm': 'web1', 'name': 's1'}}
    res, vm = run(host, snap, 'snap')
    assert_clear_failure(res)
    assert snapshot_of_files(host) == before
    assert host.temp_files() == []
    assert not os.path.exists(os.path.join(Layout(host.state_dir, host.run_dir).vm_dir('web1'), recovery.MARKER))
    assert host.pid('web1') == pid and host.vmm_pids('web1') == [pid]
    assert vm['state'] == 'running' and vm['snapshots'] == []
    os.unlink(host.filler)
    res, vm = run(host, snap, 'snap')
    assert res['_rc'] == 0 and res['changed'], res
    assert [s['name'] for s in vm['snapshots']] == ['s1']
