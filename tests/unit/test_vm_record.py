"""vm_record: the record's shape in one place (constructor, accessors, upgrade), and store.Layout
reading and writing records through it."""
import json
import os

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils import store, vm_record
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import RecordUnreadable, StateError

TAP_A = 'chv0123456789ab'
TAP_B = 'chvba9876543210'


def sample():
    return vm_record.build(
        spec={'cpus': 2, 'memory': 512 << 20},
        networks=[vm_record.nic(TAP_A, 'br0', mac='02:00:00:00:00:01'),
                  vm_record.nic('tap-user', None, net_id='net1'),
                  vm_record.nic(TAP_B, 'br1', net_id='net2', address='10.0.0.5')],
        disks=[{'id': 'disk0', 'path': '/var/lib/cloudhv/vms/web1/root.raw', 'readonly': False}],
        config={'cpus': {'boot_vcpus': 2}}, binary='/usr/bin/cloud-hypervisor', run_state='running',
        managed_files=['/var/lib/cloudhv/vms/web1/root.raw'], ram_ceiling=1 << 30)


def test_build_makes_the_shape_ch_vm_writes():
    record = sample()
    assert record['record_version'] == vm_record.RECORD_VERSION
    assert set(record) == {'record_version', 'spec', 'config', 'binary', 'run_state', 'managed_files',
                           'ram_ceiling'}
    # the NICs live under spec, as spec.normalize_networks makes them
    assert [n['tap'] for n in record['spec']['networks']] == [TAP_A, 'tap-user', TAP_B]
    assert 'networks' not in record
    first = record['spec']['networks'][0]
    assert set(first) >= {'id', 'bridge', 'user_tap', 'tap', 'managed_tap', 'mac', 'ip', 'mask', 'mtu',
                          'num_queues', 'rate_limit'}
    assert first['managed_tap'] is True and first['user_tap'] is None
    user = record['spec']['networks'][1]
    assert user['managed_tap'] is False and user['user_tap'] == 'tap-user' and user['bridge'] is None
    assert record['spec']['networks'][2]['address'] == '10.0.0.5'
    assert record['spec']['cpus'] == 2
    # keys ch_vm leaves out by default are left out
    assert 'launcher' not in record and 'cloned_from' not in record and 'name' not in record
    assert vm_record.build(launcher='systemd')['launcher'] == 'systemd'


def test_build_does_not_share_the_callers_spec():
    spec = {'networks': [], 'cpus': 1}
    record = vm_record.build(spec=spec, networks=[vm_record.nic(TAP_A, 'br0')])
    assert spec == {'networks': [], 'cpus': 1}
    assert vm_record.managed_taps(record) == [TAP_A]


def test_accessors():
    record = sample()
    assert vm_record.spec(record)['cpus'] == 2
    assert [n['id'] for n in vm_record.networks(record)] == ['net0', 'net1', 'net2']
    assert vm_record.managed_taps(record) == [TAP_A, TAP_B]      # not the user's own tap
    assert [d['id'] for d in vm_record.disks(record)] == ['disk0']
    assert vm_record.run_state(record) == 'running'
    assert vm_record.managed_files(record) == ['/var/lib/cloudhv/vms/web1/root.raw']
    assert vm_record.binary(record) == '/usr/bin/cloud-hypervisor'
    assert vm_record.config(record) == {'cpus': {'boot_vcpus': 2}}
    assert vm_record.ram_ceiling(record) == 1 << 30
    assert vm_record.launcher(record) is None and vm_record.cloned_from(record) is None
    assert vm_record.version(record) == vm_record.RECORD_VERSION


@pytest.mark.parametrize('record', [None, {}, {'spec': None}, {'spec': {'networks': None}}])
def test_accessors_of_empty_records(record):
    assert vm_record.spec(record) in ({}, {'networks': None})
    assert vm_record.networks(record) == [] and vm_record.disks(record) == []
    assert vm_record.managed_taps(record) == [] and vm_record.managed_files(record) == []
    assert vm_record.run_state(record) is None and vm_record.ram_ceiling(record) is None


def test_managed_taps_read_the_spec_not_the_top_level():
    """The bug: store.record_taps read record['networks'], a key ch_vm never writes."""
    wrong = {'networks': [{'tap': TAP_A, 'managed_tap': True}]}
    assert vm_record.managed_taps(wrong) == []
    right = vm_record.build(networks=[{'tap': TAP_A, 'managed_tap': True}])
    assert vm_record.managed_taps(right) == [TAP_A]


def test_stamp_sets_version_and_name_on_a_copy():
    record = {'spec': {}, 'record_version': 0}
    stamped = vm_record.stamp(record, 'web1')
    assert stamped == {'spec': {}, 'record_version': vm_record.RECORD_VERSION, 'name': 'web1'}
    assert record == {'spec': {}, 'record_version': 0}


def test_upgrade_of_a_record_without_version():
    """Records without record_version are of version 1 (today's shape): only the version is stamped."""
    old = {'spec': {'networks': [vm_record.nic(TAP_A, 'br0')]}, 'run_state': 'stopped'}
    new = vm_record.upgrade(old, name='web1', path='/x/vm.json')
    assert new == dict(old, record_version=vm_record.RECORD_VERSION)
    assert 'record_version' not in old
    assert vm_record.upgrade(None) is None
    current = sample()
    assert vm_record.upgrade(current) == current


@pytest.mark.parametrize('record,problem', [
    ([1, 2], 'is not a JSON object'),
    ({'record_version': vm_record.RECORD_VERSION + 1}, 'written by a newer release'),
    ({'record_version': '1'}, "record_version '1'"),
    ({'record_version': True}, 'record_version True'),
    ({'spec': [1]}, 'spec is [1], not a JSON object'),
    ({'managed_files': 'a'}, "managed_files is 'a', not a JSON array"),
    ({'ram_ceiling': '1G'}, 'ram_ceiling'),
    ({'spec': {'networks': {'tap': TAP_A}}}, 'spec.networks'),
    ({'spec': {'disks': ['/a']}}, 'spec.disks'),
])
def test_upgrade_refuses_what_it_cannot_use(record, problem):
    with pytest.raises(RecordUnreadable) as info:
        vm_record.upgrade(record, name='web1', path='/s/vms/web1/vm.json')
    assert problem in info.value.msg, info.value.msg
    assert '/s/vms/web1/vm.json' in info.value.msg and info.value.details['path'] == '/s/vms/web1/vm.json'
    assert 'cloudhv.ch.ch_vm name=web1 state=absent force=true' in info.value.msg
    assert isinstance(info.value, StateError)


def test_layout_reads_and_writes_through_the_record_module(tmp_path):
    layout = store.Layout(str(tmp_path / 's'), str(tmp_path / 'r'))
    layout.ensure_dirs('web1')
    record = sample()
    del record['record_version']
    layout.write_record('web1', record)
    with open(layout.record_path('web1')) as handle:
        on_disk = json.load(handle)
    assert on_disk['record_version'] == vm_record.RECORD_VERSION and on_disk['name'] == 'web1'
    assert layout.read_record('web1') == on_disk
    assert vm_record.managed_taps(layout.read_record('web1')) == [TAP_A, TAP_B]
    with open(layout.record_path('web1'), 'w') as handle:
        json.dump({'record_version': 99}, handle)
    with pytest.raises(RecordUnreadable) as info:
        layout.read_record('web1')
    assert 'record_version 99' in info.value.msg and layout.record_path('web1') in info.value.msg
    os.unlink(layout.record_path('web1'))
    assert layout.read_record('web1') is None
