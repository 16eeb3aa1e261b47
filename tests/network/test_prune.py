"""prune_taps: only the collection's orphaned taps go; other interfaces never do. "Running" is
decided by process.running_pid (pid file + a live process whose argv names the API socket)."""
import os
import sys

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils import vm_record
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import HostError
from ansible_collections.cloudhv.ch.plugins.module_utils.netlink import Netlink
from ansible_collections.cloudhv.ch.plugins.module_utils.spec import tap_name as spec_tap_name

from tests.network.netutil import links, sh


def tap_name(seed):
    """The collection's tap name for NIC <index> of VM <name> (seed '<name>/<index>') on a test host."""
    vm, index = seed.split('/')
    return spec_tap_name('test-host', vm, int(index))


T_STOPPED = tap_name('stopped/0')      # recorded, VM not running, on br0       -> pruned
T_STOPPED_ELSEWHERE = tap_name('stopped/1')   # recorded, VM not running, on br1 -> kept (not this bridge)
T_RUNNING = tap_name('running/0')      # recorded, VM running, on br0          -> kept
T_ORPHAN = tap_name('orphan/0')        # no record, on br0                      -> pruned
T_LOOSE = tap_name('orphan/1')         # no record, attached nowhere            -> pruned
T_HELD = tap_name('orphan/2')          # no record, but a process holds it open -> kept
FOREIGN_TAP = 'tap0'                   # not ours (name), on br0                -> kept
FOREIGN_VETH = tap_name('veth/0')      # our name pattern but a veth            -> kept


def _record(layout, vm, taps):
    """The VM's record as ch_vm writes it: its NICs under spec.networks."""
    layout.ensure_dirs(vm)
    layout.write_record(vm, vm_record.build(
        networks=[vm_record.nic(t, b, net_id='net%d' % i) for i, (t, b) in enumerate(taps)],
        run_state='running' if vm == 'running' else 'stopped'))


@pytest.fixture
def scene(tmp_path, netns, namespaces, engine_factory):
    engine = engine_factory(netns)
    layout = engine.layout
    engine.run(name='br0', addresses=['10.6.0.1/24'])
    engine.run(name='br1')
    with Netlink(netns) as nl:
        for tap, bridge in ((T_STOPPED, 'br0'), (T_STOPPED_ELSEWHERE, 'br1'), (T_RUNNING, 'br0'),
                            (T_ORPHAN, 'br0'), (T_HELD, 'br0')):
            nl.ensure_tap(tap, bridge)
        nl.create_tap(T_LOOSE)
    sh('ip', 'tuntap', 'add', 'dev', FOREIGN_TAP, 'mode', 'tap', ns=netns)
    sh('ip', 'link', 'set', FOREIGN_TAP, 'master', 'br0', ns=netns)
    sh('ip', 'link', 'add', FOREIGN_VETH, 'type', 'veth', 'peer', 'name', 'vpeer', ns=netns)
    _record(layout, 'stopped', [(T_STOPPED, 'br0'), (T_STOPPED_ELSEWHERE, 'br1')])
    _record(layout, 'running', [(T_RUNNING, 'br0')])
    # a live "VMM": its argv names the API socket, its pid is in the pid file
    os.makedirs(layout.run_dir, exist_ok=True)
    vmm = namespaces.spawn(None, sys.executable, '-c', 'import time; time.sleep(600)',
                           '--api-socket', 'path=%s' % layout.socket_path('running'))
    with open(layout.pid_path('running'), 'w') as handle:
        handle.write('%d\n' % vmm.pid)
    holder = namespaces.spawn(netns, sys.executable, '-c',
                              'import fcntl,os,struct,time\n'
                              'fd=os.open("/dev/net/tun",os.O_RDWR)\n'
                              'fcntl.ioctl(fd,0x400454ca,struct.pack("16sH22x",b"%s",0x5002))\n'
                              'print("open",flush=True)\ntime.sleep(600)' % T_HELD)
    assert holder.stdout.readline().strip() == 'open'
    return engine, netns


def test_prune_only_orphans(scene):
    engine, netns = scene
    before = set(links(netns))
    expected = sorted([T_STOPPED, T_ORPHAN, T_LOOSE])

    check = engine.run(check=True, name='br0', prune_taps=True)
    assert check['changed'] is True
    assert check['network']['pruned'] == expected
    assert set(links(netns)) == before

    res = engine.run(name='br0', prune_taps=True)
    assert res['changed'] is True
    assert res['network']['pruned'] == expected
    assert res['diff']['after']['pruned'] == expected
    assert set(links(netns)) == before - set(expected)
    for kept in (T_STOPPED_ELSEWHERE, T_RUNNING, T_HELD, FOREIGN_TAP, FOREIGN_VETH, 'vpeer', 'br0', 'br1'):
        assert kept in links(netns), kept
    assert res['network']['taps'] == sorted([T_RUNNING, T_HELD, FOREIGN_TAP])

    again = engine.run(name='br0', prune_taps=True)
    assert again['changed'] is False and again['network']['pruned'] == []

    # pruning for br1 removes the stopped VM's tap there
    res = engine.run(name='br1', prune_taps=True)
    assert res['network']['pruned'] == [T_STOPPED_ELSEWHERE]


def test_absent_refused_while_a_vm_runs(scene):
    engine, netns = scene
    sh('ip', 'link', 'set', T_HELD, 'nomaster', ns=netns)       # leave only the running VM's tap as a reason
    with pytest.raises(HostError) as info:
        engine.run(name='br0', state='absent')
    assert 'VM running' in info.value.msg and T_RUNNING in info.value.msg
    assert 'br0' in links(netns)
    with pytest.raises(HostError):
        engine.run(check=True, name='br0', state='absent')
    # absent with prune: the stopped VM's and orphan taps go first, the running one still blocks
    with pytest.raises(HostError):
        engine.run(name='br0', state='absent', prune_taps=True)
    assert T_STOPPED in links(netns)        # refused before anything changed
    res = engine.run(name='br0', state='absent', prune_taps=True, force=True)
    assert res['changed'] is True
    assert res['network']['pruned'] == sorted([T_STOPPED, T_ORPHAN, T_LOOSE])
    assert 'br0' not in links(netns) and T_RUNNING in links(netns)


def test_taps_of_recorded_vms_are_theirs_without_carrier(scene):
    """The owners come from the records ch_vm writes (spec.networks): a recorded VM's tap that no
    process holds open (no carrier) is still that VM's. store.record_taps read a top-level
    'networks' key that ch_vm never writes, so every tap looked like an orphan: prune_taps removed
    recorded VMs' taps on any bridge, and state=absent, with nothing holding the tap open, went
    ahead although the tap's VM runs (with a VMM holding it, its refusal named no VM)."""
    engine, netns = scene
    assert 'LOWER_UP' not in links(netns)[T_RUNNING]['flags']      # no carrier: nothing holds it open
    check = engine.run(check=True, name='br0', prune_taps=True)
    assert T_RUNNING not in check['network']['pruned'] and T_STOPPED_ELSEWHERE not in check['network']['pruned']
    sh('ip', 'link', 'set', T_HELD, 'nomaster', ns=netns)
    with pytest.raises(HostError) as info:
        engine.run(name='br0', state='absent')
    assert 'tap %s (VM running)' % T_RUNNING in info.value.msg, info.value.msg
    assert info.value.details['busy_taps'] == [T_RUNNING]
