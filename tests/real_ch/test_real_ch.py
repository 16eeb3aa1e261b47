"""The collection against a real Cloud Hypervisor v53.0, with the test guest of
tests/support/testguest.py (a 32-bit PVH kernel that boots on any KVM host, printing a marker and
then a counter kept in guest memory on its serial port).

Two levels in one pass over one VM and its relatives:
(a) everything on the CH side: create, boot, info, pause, resume, live resize of vCPUs, memory and
    balloon, hotplug of disks and a NIC and their removal, taps that CH opens (carrier,
    multi-queue), the stop ladder against a guest that ignores ACPI, crash detection and
    recovery, snapshot present/restored/absent, clones (copy and overlay), a fork, standby and
    wake, the autostart unit run with the real ch-remote, ch_host_info on the real --version,
    absent and purge. Every state-changing step runs in check mode, for real, again (unchanged)
    and in check mode again (host.converge).
(b) the guest's voice, its serial log: the marker after boot, a counter that stops while paused
    and goes on after resume, that goes on from the snapshot's value after a restore and in a
    clone, and a guest-initiated power-off seen as `stopped`.

Without CH_BINARY every test here is skipped with that reason: none of them counts as a pass.
The tests share one VM and run in file order (one xdist group).
"""
import os
import signal
import subprocess
import time

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils import autostart
from ansible_collections.cloudhv.ch.plugins.module_utils.process import process_gone

from tests.real_ch.realch import MIB, SKIP_REASON, read_text
from tests.support import testguest

pytestmark = [
    pytest.mark.real_ch,
    pytest.mark.xdist_group('real_ch'),
    pytest.mark.skipif(not os.environ.get('CH_BINARY'), reason=SKIP_REASON),
]

IFF_MULTI_QUEUE = 0x0100
# kvm_pvm (this project's machines) has no KVM_GET_NESTED_STATE, which CH v53.0 calls for every
# vCPU of a snapshot (EINVAL): snapshots, restores, clones, forks and standby fail there
HOST_CANNOT_SNAPSHOT = 'GetNestedState(Invalid argument'
NO_SNAPSHOT_REASON = ('CH v53.0 reads every vCPU\'s nested state for a snapshot (KVM_GET_NESTED_STATE), '
                      'and this host\'s KVM refuses it with EINVAL (kvm_pvm has no nested state)')
# a stop must end within stop_timeout plus the ladder's later rungs; far above what it takes, far
# below "hangs": this bounds the ladder, it does not time it
STOP_BOUND = 60.0


def live_vcpus(vm):
    return vm['live_config']['cpus']['boot_vcpus']


def last_tick(host, name):
    ticks = host.ticks(name)
    return ticks[-1] if ticks else None


def frozen(host, name, seconds=1.5):
    """Whether the guest printed nothing for ``seconds``."""
    before = host.serial(name)
    time.sleep(seconds)
    return before == host.serial(name)


def wait_gone(pid, timeout=30.0):
    """Whether the process ``pid`` ended (a zombie counts: this host's PID 1 reaps late)."""
    deadline = time.time() + timeout
    while not process_gone(pid) and time.time() < deadline:
        time.sleep(0.1)
    return process_gone(pid)


@pytest.fixture(scope='module')
def vm(real_host):
    """The suite's VM: booted once, shared by the tests below in file order."""
    return real_host.name(None)


@pytest.fixture(scope='module')
def bridge(real_host):
    host = real_host
    host.converge('cloudhv.ch.ch_network', {'name': host.bridge, 'addresses': [host.gateway]})
    return host.bridge


def test_host_info_reads_the_real_version(real_host):
    host = real_host
    out = subprocess.run([host.binary, '--version'], capture_output=True, text=True, check=True).stdout
    binary = host.ok('cloudhv.ch.ch_host_info', {'binary': host.binary})['host']['binary']
    assert binary['present'] and binary['executable'], binary
    assert out.startswith('cloud-hypervisor v%s' % binary['version']), (out, binary)
    assert binary['version'].split('.')[0] == '53', binary


def test_create_boots_the_guest(real_host, vm):
    host = real_host
    done = host.converge('cloudhv.ch.ch_vm', host.guest_args(vm))
    assert done['vm']['state'] == 'running' and done['vm']['pid'], done['vm']
    ticks = host.wait_ticks(vm, count=3)
    assert host.serial(vm).startswith(testguest.MARKER + '\n'), host.serial(vm)[:200]
    assert ticks[:3] == [0, 1, 2], ticks
    info = host.info(vm)
    assert info['state'] == 'running' and info['pid'] == done['vm']['pid'], info
    assert live_vcpus(info) == 1 and info['live_config']['cpus']['max_vcpus'] == 2
    assert info['live_config']['memory']['size'] == 128 * MIB


def test_pause_stops_the_counter_and_resume_goes_on(real_host, vm):
    host = real_host
    pid = host.info(vm)['pid']
    host.converge('cloudhv.ch.ch_vm', host.guest_args(vm, state='paused'))
    assert host.info(vm)['state'] == 'paused'
    paused_at = last_tick(host, vm)
    assert frozen(host, vm), 'the counter went on while the VM was paused'
    host.converge('cloudhv.ch.ch_vm', host.guest_args(vm))
    ticks = host.wait_ticks(vm, more_than=paused_at)
    after = [t for t in ticks if t > paused_at]
    assert after[0] == paused_at + 1, (paused_at, ticks[-10:])   # went on, did not start over
    assert host.info(vm)['pid'] == pid


def test_live_resize_of_vcpus_memory_and_balloon(real_host, vm):
    host = real_host
    before = host.info(vm)
    grown = host.guest_args(vm, cpus=2, memory='256M', balloon={'size': '32M'})
    done = host.converge('cloudhv.ch.ch_vm', grown)
    assert done['restart_required'] is False, done['changes']
    after = host.info(vm)
    assert after['pid'] == before['pid'], 'resized by restarting, not live'
    assert live_vcpus(after) == 2, after['live_config']['cpus']
    memory = after['live_config']['memory']
    assert memory['size'] + memory.get('hotplugged_size', 0) == 256 * MIB, memory
    assert after['live_config']['balloon']['size'] == 32 * MIB, after['live_config']['balloon']
    host.wait_ticks(vm, more_than=last_tick(host, vm))            # the guest still runs


def test_hotplug_of_disks_and_a_multiqueue_nic_then_removal(real_host, vm, bridge):
    host = real_host
    vm_dir = os.path.join(host.state_dir, 'vms', vm)
    data = {'path': os.path.join(vm_dir, 'data.raw'), 'size': '16M'}
    scratch = {'path': os.path.join(vm_dir, 'scratch.raw'), 'size': '8M'}
    pid = host.info(vm)['pid']
    added = host.converge('cloudhv.ch.ch_vm', host.guest_args(
        vm, cpus=2, memory='256M', balloon={'size': '32M'}, disks=[data, scratch],
        networks=[{'bridge': bridge, 'num_queues': 4}]))
    assert added['restart_required'] is False, added['changes']
    info = host.info(vm)
    assert info['pid'] == pid
    assert [d['path'] for d in info['live_config']['disks']] == [data['path'], scratch['path']]
    (nic,) = info['networks']
    tap = nic['tap']
    assert read_text('/sys/class/net/%s/carrier' % tap).strip() == '1', 'CH did not open the tap'
    assert read_text('/sys/class/net/%s/master/uevent' % tap).find('INTERFACE=%s' % bridge) >= 0
    assert int(read_text('/sys/class/net/%s/tun_flags' % tap), 16) & IFF_MULTI_QUEUE, 'num_queues 4 needs a multi-queue tap'
    assert info['live_config']['net'][0]['num_queues'] == 4

    removed = host.converge('cloudhv.ch.ch_vm', host.guest_args(
        vm, cpus=2, memory='256M', balloon={'size': '32M'}, disks=[data], networks=[]))
    assert removed['restart_required'] is False, removed['changes']
    info = host.info(vm)
    assert info['pid'] == pid
    assert [d['path'] for d in info['live_config']['disks']] == [data['path']]
    assert not info['live_config'].get('net'), info['live_config'].get('net')
    assert os.path.exists(scratch['path']), 'removing a disk from the VM deleted its file'
    assert not os.path.exists('/sys/class/net/%s' % tap), 'the removed NIC left its tap'
    host.wait_ticks(vm, more_than=last_tick(host, vm))


def current_args(host, vm, **overrides):
    """The suite VM as it stands after the hotplug test."""
    return host.guest_args(vm, cpus=2, memory='256M', balloon={'size': '32M'},
                           disks=[{'path': os.path.join(host.state_dir, 'vms', vm, 'data.raw'), 'size': '16M'}],
                           networks=[], **overrides)


def test_stop_escalates_when_the_guest_ignores_acpi(real_host, vm):
    host = real_host
    pid = host.info(vm)['pid']
    args = current_args(host, vm, state='stopped', stop_timeout=3)
    assert host.ok('cloudhv.ch.ch_vm', args, check=True)['changed'] is True
    assert host.info(vm)['pid'] == pid
    started = time.time()
    done = host.ok('cloudhv.ch.ch_vm', args)
    took = time.time() - started
    assert done['changed'] is True and took < STOP_BOUND, (took, done['changes'])
    assert process_gone(pid), 'the VMM still runs'
    assert host.info(vm)['state'] == 'stopped'
    assert frozen(host, vm)
    assert host.ok('cloudhv.ch.ch_vm', args)['changed'] is False
    assert host.ok('cloudhv.ch.ch_vm', args, check=True)['changed'] is False


def test_crash_is_seen_and_recovered(real_host, vm):
    host = real_host
    started = host.ok('cloudhv.ch.ch_vm', current_args(host, vm))
    pid = started['vm']['pid']
    host.wait_ticks(vm, count=2)
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)
    assert host.info(vm)['state'] == 'crashed'
    done = host.converge('cloudhv.ch.ch_vm', current_args(host, vm))
    assert done['vm']['pid'] != pid
    ticks = host.wait_ticks(vm, count=2)
    assert ticks[:2] == [0, 1], ticks[:5]                      # a fresh boot


def test_guest_power_off_is_seen_as_stopped(real_host):
    host = real_host
    name = host.name('off')
    args = host.guest_args(name, cmdline='console=ttyS0 poweroff', balloon=None, memory_hotplug=None)
    args = dict((k, v) for k, v in args.items() if v is not None)
    first = host.ok('cloudhv.ch.ch_vm', args)
    assert first['changed'] is True
    pid = first['vm']['pid']
    if pid:
        assert wait_gone(pid), 'the guest powered itself off but its VMM still runs'
    assert host.ticks(name)[:3] == [0, 1, 2], host.serial(name)
    assert host.info(name)['state'] == 'stopped'
    stopped = dict(args, state='stopped')
    cleaned = host.ok('cloudhv.ch.ch_vm', stopped)             # at most the clean-up after it
    assert cleaned['diff']['before']['state'] == 'stopped', cleaned['diff']
    host.converge('cloudhv.ch.ch_vm', stopped, changes=False)


def _run_unit(text, timeout=30):
    """Run a systemd service unit's Exec lines as systemd would for a start, then a stop (this
    host's PID 1 is not systemd): returns (the ExecStart process, a stop function)."""
    lines = [line.split('=', 1) for line in text.splitlines() if line.startswith('Exec') or line.startswith('Timeout')]

    def run(kind):
        for key, command in lines:
            if key != kind:
                continue
            ignore = command.startswith('-')
            proc = subprocess.run(command.lstrip('-'), shell=True, capture_output=True, text=True, timeout=timeout,
                                  check=False)
            assert ignore or proc.returncode == 0, (command, proc.stdout, proc.stderr)

    run('ExecStartPre')
    (start,) = [command for key, command in lines if key == 'ExecStart']
    main = subprocess.Popen(start, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    run('ExecStartPost')

    def stop():
        run('ExecStop')
        (stop_timeout,) = [int(value) for key, value in lines if key == 'TimeoutStopSec']
        try:
            main.wait(stop_timeout)
        except subprocess.TimeoutExpired:   # systemd's SIGTERM, then SIGKILL
            os.killpg(main.pid, signal.SIGTERM)
            try:
                main.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(main.pid, signal.SIGKILL)
                main.wait()
        run('ExecStopPost')
    return main, stop


def test_autostart_unit_boots_the_vm_with_the_real_ch_remote(real_host, bridge, tmp_path):
    """The unit ch_vm writes for autostart (its vmconfig.json and Exec lines) run as systemd would:
    the real ch-remote creates and boots the VM from the stored config."""
    host = real_host
    assert os.access(host.ch_remote, os.X_OK), 'CH_REMOTE=%s is not executable' % host.ch_remote
    name = host.name('unit')
    defined = host.ok('cloudhv.ch.ch_vm', host.guest_args(name, state='stopped', networks=[{'bridge': bridge}]))
    vm = defined['vm']
    socket_path = os.path.join(host.run_dir, 'unit.sock')
    unit_dir, vm_dir = tmp_path / 'units', os.path.join(host.state_dir, 'vms', name)
    unit_dir.mkdir()
    systemctl = tmp_path / 'systemctl'
    systemctl.write_text('#!/bin/sh\nexit 0\n')
    systemctl.chmod(0o755)
    taps = [{'tap': n['tap'], 'bridge': n['bridge'], 'multi_queue': False} for n in vm['networks']]
    autostart.converge(name, True, vm_dir, config=vm['config'], unit_dir=str(unit_dir), systemctl=str(systemctl),
                       require_pid1=False, unit_args={'binary': host.binary, 'ch_remote': host.ch_remote,
                                                      'socket_path': socket_path, 'taps': taps, 'stop_timeout': 3})
    text = (unit_dir / autostart.unit_name(name, vm_dir)).read_text()
    main, stop = _run_unit(text)
    try:
        ticks = host.wait_ticks(name, count=2)
        assert ticks[:2] == [0, 1]
        info = subprocess.run([host.ch_remote, '--api-socket', socket_path, 'info'], capture_output=True,
                              text=True, check=True).stdout
        assert '"Running"' in info, info
        (tap,) = [t['tap'] for t in taps]
        assert read_text('/sys/class/net/%s/carrier' % tap).strip() == '1'
    finally:
        stop()
    assert main.returncode is not None
    assert not os.path.exists(socket_path)
    assert not [t for t in taps if os.path.exists('/sys/class/net/%s' % t['tap'])]


@pytest.fixture(scope='module')
def snapshot_s1(real_host, vm):
    """Snapshot s1 of the paused VM: returns the last tick the guest printed before it (the
    snapshot's counter is that value + 1)."""
    host = real_host
    host.ok('cloudhv.ch.ch_vm', current_args(host, vm, state='paused'))
    paused_at = last_tick(host, vm)
    predicted = host.snapshot(vm, 's1', 'present', check=True)
    assert predicted['changed'] is True
    created = host.task('cloudhv.ch.ch_snapshot', dict(host.defaults, vm=vm, name='s1', state='present'))
    if created['_status'] == 'failed' and HOST_CANNOT_SNAPSHOT in created.get('msg', ''):
        # this host's KVM cannot hand CH the vCPU state a snapshot needs: the refusal must leave
        # the VM as it was and no snapshot behind; what needs a snapshot is skipped, not passed
        info = host.info(vm)
        assert info['state'] == 'paused' and info['snapshots'] == [], info
        assert os.listdir(os.path.join(host.state_dir, 'vms', vm, 'snapshots')) == []
        host.ok('cloudhv.ch.ch_vm', current_args(host, vm))
        pytest.skip('real_ch: this host cannot snapshot a VM with this CH: %s' % NO_SNAPSHOT_REASON)
    assert created['changed'] is True and created['snapshot']['includes_disks'] is True, created
    assert host.snapshot(vm, 's1', 'present')['changed'] is False
    assert host.snapshot(vm, 's1', 'present', check=True)['changed'] is False
    assert host.info(vm)['state'] == 'paused', 'a snapshot of a paused VM resumed it'
    assert frozen(host, vm)
    host.ok('cloudhv.ch.ch_vm', current_args(host, vm))
    return paused_at


def test_snapshot_then_restore_goes_on_from_the_snapshot(real_host, vm, snapshot_s1):
    host = real_host
    host.wait_ticks(vm, more_than=snapshot_s1 + 3, count=1)       # well past the snapshot
    serial_before = host.serial(vm)
    pid = host.info(vm)['pid']
    predicted = host.snapshot(vm, 's1', 'restored', check=True)
    assert predicted['changed'] is True
    assert host.info(vm)['pid'] == pid, 'check mode restored'
    restored = host.snapshot(vm, 's1', 'restored', resume=True)
    assert restored['changed'] is True
    info = host.info(vm)
    assert info['state'] == 'running' and info['pid'] != pid, info
    after = host.wait_ticks(vm, since=serial_before)
    assert after[0] in (snapshot_s1 + 1, snapshot_s1 + 2), (snapshot_s1, after[:5])
    # state=restored is an action: every run restores again and says so (documented)


def test_clone_counts_on_from_the_snapshot_in_its_own_serial_file(real_host, vm, snapshot_s1):
    host = real_host
    clone = host.name('clone')
    args = {'name': clone, 'state': 'running', 'clone_from': {'vm': vm, 'snapshot': 's1'}}
    done = host.converge('cloudhv.ch.ch_vm', args)
    assert done['vm']['serial_file'] == host.serial_file(clone) != host.serial_file(vm)
    ticks = host.wait_ticks(clone, count=2)
    assert ticks[0] in (snapshot_s1 + 1, snapshot_s1 + 2), (snapshot_s1, ticks[:5])
    source, copy = host.info(vm), host.info(clone)
    assert source['state'] == copy['state'] == 'running' and source['pid'] != copy['pid']
    assert copy['live_config']['disks'][0]['path'] != source['live_config']['disks'][0]['path']


def test_linked_clone_on_the_snapshots_disks(real_host, vm, snapshot_s1):
    host = real_host
    linked = host.name('linked')
    args = {'name': linked, 'state': 'running', 'clone_from': {'vm': vm, 'snapshot': 's1', 'disks': 'overlay'}}
    host.converge('cloudhv.ch.ch_vm', args)
    disks = host.info(linked)['live_config']['disks']
    assert disks and all(d['image_type'] == 'Qcow2' and d.get('backing_files') for d in disks), disks
    ticks = host.wait_ticks(linked, count=2)
    assert ticks[0] in (snapshot_s1 + 1, snapshot_s1 + 2), (snapshot_s1, ticks[:5])
    refused = host.task('cloudhv.ch.ch_snapshot', dict(host.defaults, vm=vm, name='s1', state='absent'))
    assert refused['_rc'] != 0 and linked in refused['msg'], refused
    host.converge('cloudhv.ch.ch_vm', {'name': linked, 'state': 'absent', 'purge': True})


def test_fork_of_the_running_vm(real_host, vm, snapshot_s1):
    host = real_host
    fork = host.name('fork')
    at = last_tick(host, vm)
    done = host.converge('cloudhv.ch.ch_vm', {'name': fork, 'state': 'running', 'clone_from': {'vm': vm}})
    ticks = host.wait_ticks(fork, count=2)
    assert ticks[0] > at, (at, ticks[:5])                        # the source's memory, not a cold boot
    source = host.info(vm)
    assert source['state'] == 'running' and source['pid'] != done['vm']['pid']
    host.wait_ticks(vm, more_than=last_tick(host, vm))           # the source goes on too


def test_standby_and_wake(real_host, vm, snapshot_s1):
    host = real_host
    host.converge('cloudhv.ch.ch_vm', current_args(host, vm, state='standby'))
    info = host.info(vm)
    assert info['state'] == 'standby' and not info['pid'], info
    at = last_tick(host, vm)
    assert frozen(host, vm)
    serial = host.serial(vm)
    host.converge('cloudhv.ch.ch_vm', current_args(host, vm))
    fresh = host.wait_ticks(vm, since=serial)
    assert fresh[0] in (at + 1, at + 2), (at, fresh[:5])


def test_snapshot_absent(real_host, vm, snapshot_s1):
    host = real_host
    path = os.path.join(host.state_dir, 'vms', vm, 'snapshots', 's1')
    assert host.snapshot(vm, 's1', 'absent', check=True)['changed'] is True
    assert os.path.isdir(path)
    assert host.snapshot(vm, 's1', 'absent')['changed'] is True
    assert not os.path.exists(path)
    assert host.snapshot(vm, 's1', 'absent')['changed'] is False


def test_absent_and_purge_leave_nothing(real_host, vm):
    host = real_host
    for name in list(host.names):
        if host.info(name) is None:
            continue
        host.converge('cloudhv.ch.ch_vm', {'name': name, 'state': 'absent', 'purge': True})
        assert not os.path.exists(os.path.join(host.state_dir, 'vms', name)), name
    assert host.vmm_pids() == [], 'VMM processes left behind'
    assert host.ok('cloudhv.ch.ch_vm_info', {})['vms'] == []
    assert [e for e in os.listdir(host.run_dir) if e.endswith('.sock')] == []
    host.converge('cloudhv.ch.ch_network', {'name': host.bridge, 'state': 'absent'})
    assert not os.path.exists('/sys/class/net/%s' % host.bridge)
