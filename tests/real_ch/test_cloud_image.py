"""The collection against a real Cloud Hypervisor on a KVM host whose KVM boots stock kernels (how
users with hardware verify a release): boot an Ubuntu cloud image with cloud-init, live resize,
snapshot, restore (rollback), clone from the snapshot, fork the running VM, clean up. Every step is a
real ansible-playbook run; see conftest.py for the environment.

Without CH_BINARY, CH_FIRMWARE and CH_IMAGE every test here is skipped with that reason: none of
them counts as a pass. tests/real_ch/test_real_ch.py covers the same and more with the test guest.
The tests share one VM and run in file order (one xdist group).
"""
import os
import shutil
import subprocess
import time

import pytest

from tests.real_ch.realch import SKIP_REASON

pytestmark = [
    pytest.mark.real_ch,
    pytest.mark.xdist_group('real_ch_cloud'),
    pytest.mark.skipif(not os.environ.get('CH_BINARY'), reason=SKIP_REASON),
]

GIB = 1024 ** 3


def can_ping(host):
    """Why the guest cannot be pinged here, or None when it can."""
    if host.simulated:
        return 'CH_BINARY is the CH simulator (CH_REAL_CH_ALLOW_SIMULATOR=1): no guest to ping'
    if not shutil.which('ping'):
        return 'no ping command on this host (iputils-ping)'
    return None


def ping(address, timeout=120.0):
    """True once `address` answers one ICMP echo, False after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if subprocess.run(['ping', '-c', '1', '-W', '2', address], capture_output=True,
                          check=False).returncode == 0:
            return True
        time.sleep(1)
    return False


def live_vcpus(vm):
    return vm['live_config']['cpus']['boot_vcpus']


@pytest.fixture(scope='module')
def snapshot_s1(cloud_host, guest):
    """Snapshot s1 of the running VM, taken once; returns the vCPUs the guest had then."""
    host = cloud_host
    before = host.info(host.vm_name)
    assert before['state'] == 'running', before
    created = host.snapshot('s1', 'present')
    return {'vcpus': live_vcpus(before), 'pid': before['pid'], 'result': created}


def test_boot_with_cloud_init(cloud_host, guest):
    host = cloud_host
    first = guest['first']
    vm = first['vm']
    assert first['changed'] is True
    assert vm['state'] == 'running' and vm['pid'], vm
    assert vm['networks'][0]['bridge'] == host.bridge
    disks = [d['path'] for d in vm['config']['disks']]
    assert any(p.endswith('cidata.iso') for p in disks), disks  # cloud-init in the same task
    assert guest['seen'], 'the serial log never showed a login prompt or cloud-init finishing'

    again = host.ok('cloudhv.ch.ch_vm', host.vm_args())
    assert again['changed'] is False, again.get('changes')
    assert again['vm']['pid'] == vm['pid']
    predicted = host.ok('cloudhv.ch.ch_vm', host.vm_args(), check=True)
    assert predicted['changed'] is False, predicted.get('changes')

    info = host.info(host.vm_name)
    assert info['state'] == 'running' and info['pid'] == vm['pid'], info


def test_guest_network_answers(cloud_host, guest):
    """cloud-init's network config reached the guest: it answers on the test bridge."""
    reason = can_ping(cloud_host)
    if reason:
        pytest.skip('real_ch: ' + reason)
    assert ping(cloud_host.guest_ip), 'the guest never answered ping at %s' % cloud_host.guest_ip


def test_live_resize(cloud_host, guest):
    host = cloud_host
    before = host.info(host.vm_name)
    grown = host.vm_args(cpus=2, memory='2G')  # RAM within memory (1G) + memory_hotplug (2G)

    predicted = host.ok('cloudhv.ch.ch_vm', grown, check=True)
    assert predicted['changed'] is True
    assert live_vcpus(host.info(host.vm_name)) == live_vcpus(before), 'check mode changed the VM'

    done = host.ok('cloudhv.ch.ch_vm', grown)
    assert done['changed'] is True
    assert done['restart_required'] is False, done.get('changes')
    assert done['vm']['pid'] == before['pid'], 'resized by restarting, not live'

    after = host.info(host.vm_name)
    assert after['state'] == 'running' and after['pid'] == before['pid'], after
    assert live_vcpus(after) == 2, after['live_config']['cpus']
    assert after['memory_actual_size'] == 2 * GIB, after['memory_actual_size']

    again = host.ok('cloudhv.ch.ch_vm', grown)
    assert again['changed'] is False, again.get('changes')


def test_snapshot_present_is_idempotent(cloud_host, snapshot_s1):
    host = cloud_host
    assert snapshot_s1['result']['changed'] is True
    again = host.snapshot('s1', 'present')
    assert again['changed'] is False
    after = host.info(host.vm_name)
    assert after['state'] == 'running', 'the VM did not go back to running after the snapshot: %s' % after


def test_restore_rolls_back(cloud_host, snapshot_s1):
    host = cloud_host
    vcpus = snapshot_s1['vcpus']
    changed = host.ok('cloudhv.ch.ch_vm', host.vm_args(cpus=vcpus + 1, memory='2G'))
    assert changed['changed'] is True
    assert live_vcpus(host.info(host.vm_name)) == vcpus + 1

    predicted = host.snapshot('s1', 'restored', check=True)
    assert predicted['changed'] is True
    assert live_vcpus(host.info(host.vm_name)) == vcpus + 1, 'check mode restored the snapshot'

    restored = host.snapshot('s1', 'restored')
    assert restored['changed'] is True
    after = host.info(host.vm_name)
    assert after['state'] == 'running', after
    assert live_vcpus(after) == vcpus, 'restore did not roll back to the snapshot: %s' % after['live_config']['cpus']
    if not can_ping(host):
        assert ping(host.guest_ip), 'the restored guest does not answer ping at %s' % host.guest_ip


def test_clone_from_snapshot(cloud_host, snapshot_s1):
    host = cloud_host
    args = {'name': host.clone_name, 'state': 'running',
            'clone_from': {'vm': host.vm_name, 'snapshot': 's1'}}
    clone = host.ok('cloudhv.ch.ch_vm', args)
    assert clone['changed'] is True
    vm = clone['vm']
    assert vm['state'] == 'running' and vm['pid'], vm

    source = host.info(host.vm_name)
    assert vm['pid'] != source['pid']
    assert source['state'] == 'running', 'cloning stopped the source VM: %s' % source
    source_macs = {n['mac'] for n in source['networks']}
    source_taps = {n['tap'] for n in source['networks']}
    assert not source_macs & {n['mac'] for n in vm['networks']}, 'the clone reuses the source MAC'
    assert not source_taps & {n['tap'] for n in vm['networks']}, 'the clone reuses the source tap'

    info = host.info(host.clone_name)
    assert info['state'] == 'running', info
    assert live_vcpus(info) == snapshot_s1['vcpus']

    again = host.ok('cloudhv.ch.ch_vm', args)
    assert again['changed'] is False, again.get('changes')


def test_linked_clone_from_snapshot(cloud_host, snapshot_s1):
    """clone_from.disks=overlay: the clone's disk is a qcow2 overlay on the snapshot's copy (itself
    an overlay on CH_IMAGE here: a chain of three), restored by the real CH with a changed disk."""
    host = cloud_host
    args = {'name': host.linked_name, 'state': 'running',
            'clone_from': {'vm': host.vm_name, 'snapshot': 's1', 'disks': 'overlay'}}
    clone = host.ok('cloudhv.ch.ch_vm', args)
    assert clone['changed'] is True and clone['vm']['state'] == 'running', clone
    info = host.info(host.linked_name)
    assert info['state'] == 'running', info
    disks = [d for d in info['live_config']['disks'] if d['id'] != 'cidata']
    assert disks and all(d['image_type'] == 'Qcow2' and d.get('backing_files') for d in disks), disks
    assert live_vcpus(info) == snapshot_s1['vcpus']
    refused = host.task('cloudhv.ch.ch_snapshot', dict(host.defaults, vm=host.vm_name, name='s1', state='absent'))
    assert refused['_rc'] != 0 and host.linked_name in refused['msg'], refused
    assert host.ok('cloudhv.ch.ch_vm', args)['changed'] is False
    gone = host.ok('cloudhv.ch.ch_vm', {'name': host.linked_name, 'state': 'absent', 'purge': True})
    assert gone['changed'] is True


def test_fork_running_vm(cloud_host, guest):
    """clone_from without a snapshot forks the running VM (a temporary snapshot, then a clone)."""
    host = cloud_host
    args = {'name': host.fork_name, 'state': 'running', 'clone_from': {'vm': host.vm_name}}
    fork = host.ok('cloudhv.ch.ch_vm', args)
    assert fork['changed'] is True
    assert fork['vm']['state'] == 'running', fork['vm']
    source = host.info(host.vm_name)
    assert source['state'] == 'running', 'forking left the source VM %s' % source['state']
    assert fork['vm']['pid'] != source['pid']
    assert host.ok('cloudhv.ch.ch_vm', args)['changed'] is False


def test_cleanup_removes_everything(cloud_host, guest):
    host = cloud_host
    for name in (host.clone_name, host.fork_name):
        gone = host.ok('cloudhv.ch.ch_vm', {'name': name, 'state': 'absent', 'purge': True})
        assert gone['changed'] is True, name

    removed = host.snapshot('s1', 'absent')
    assert removed['changed'] is True
    assert host.snapshot('s1', 'absent')['changed'] is False

    gone = host.ok('cloudhv.ch.ch_vm', {'name': host.vm_name, 'state': 'absent', 'purge': True})
    assert gone['changed'] is True
    again = host.ok('cloudhv.ch.ch_vm', {'name': host.vm_name, 'state': 'absent', 'purge': True})
    assert again['changed'] is False

    host.ok('cloudhv.ch.ch_network', {'name': host.bridge, 'state': 'absent'})

    assert host.vmm_pids() == [], 'VMM processes left behind'
    assert host.ok('cloudhv.ch.ch_vm_info', {})['vms'] == []
    vms_dir = os.path.join(host.state_dir, 'vms')
    assert not os.path.isdir(vms_dir) or os.listdir(vms_dir) == [], os.listdir(vms_dir)
    assert [e for e in os.listdir(host.run_dir) if e.endswith('.sock')] == []
    link = subprocess.run(['ip', 'link', 'show', host.bridge], capture_output=True, check=False)
    assert link.returncode != 0, 'the test bridge is still there'
