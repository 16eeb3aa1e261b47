"""Option parsing, size units, identity derivation, VmConfig building and comparison."""
import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils import spec
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import OptionError

VM_DIR = '/var/lib/cloudhv/vms/web1'


def norm(**params):
    params.setdefault('name', 'web1')
    if 'firmware' not in params and 'kernel' not in params:
        params['kernel'] = '/boot/vmlinux'
    return spec.normalize(params, VM_DIR, 'host-a')


@pytest.mark.parametrize('value,expected', [
    (512, 512 * 2 ** 20), ('512', 512 * 2 ** 20), ('512M', 512 * 2 ** 20), ('512MiB', 512 * 2 ** 20),
    ('2G', 2 * 2 ** 30), ('2GiB', 2 * 2 ** 30), ('2gb', 2 * 2 ** 30), ('1.5G', 1536 * 2 ** 20),
    ('64K', 65536), ('1T', 2 ** 40), ('4096B', 4096), ('4096b', 4096),
])
def test_parse_size_units(value, expected):
    assert spec.parse_size(value, 'memory') == expected


@pytest.mark.parametrize('value', ['lots', '2X', '-1G', True, '', '1.2.3G'])
def test_parse_size_rejects_garbage_naming_the_option(value):
    with pytest.raises(OptionError) as err:
        spec.parse_size(value, 'memory_hotplug')
    assert err.value.option == 'memory_hotplug'
    assert 'memory_hotplug' in err.value.msg


def test_parse_size_zero_only_when_allowed():
    with pytest.raises(OptionError):
        spec.parse_size(0, 'memory')
    assert spec.parse_size(0, 'balloon.size', allow_zero=True) == 0


def test_tap_names_fit_ifnamsiz_and_are_deterministic():
    a = spec.tap_name('host-a', 'web1', 0)
    assert len(a) == 15 and a.startswith(spec.TAP_PREFIX)
    assert a == spec.tap_name('host-a', 'web1', 0)
    assert len({a, spec.tap_name('host-a', 'web1', 1), spec.tap_name('host-b', 'web1', 0),
                spec.tap_name('host-a', 'web2', 0)}) == 4


def test_macs_are_locally_administered_unicast_and_stable():
    macs = set()
    for vm in ('web1', 'web2', 'db'):
        for idx in range(4):
            mac = spec.mac_address('host-a', vm, idx)
            first = int(mac.split(':', 1)[0], 16)
            assert first & 0x02 and not first & 0x01
            assert mac == spec.mac_address('host-a', vm, idx)
            macs.add(mac)
    assert len(macs) == 12


def test_recorded_identity_is_reused():
    first = norm(networks=[{'bridge': 'br0'}])
    record = {'spec': first}
    # a different host id (machine-id regenerated) keeps the recorded MAC and tap
    again = spec.normalize({'name': 'web1', 'kernel': '/boot/vmlinux', 'networks': [{'bridge': 'br0'}]},
                           VM_DIR, 'host-other', record)
    assert again['networks'][0]['mac'] == first['networks'][0]['mac']
    assert again['networks'][0]['tap'] == first['networks'][0]['tap']


@pytest.mark.parametrize('params,option', [
    (dict(cpus=4, max_cpus=2), 'cpus'),
    (dict(cpus=0), 'cpus'),
    (dict(firmware='/fw', kernel='/k'), 'firmware'),
    (dict(firmware='/fw', cmdline='quiet'), 'cmdline'),
    (dict(kernel='relative/vmlinux'), 'kernel'),
    (dict(memory='lots'), 'memory'),
    (dict(disks=[{'path': 'rel.raw'}]), 'disks[0].path'),
    (dict(disks=[{'path': '/a.raw', 'size': '1G', 'backing_file': '/b.qcow2'}]), 'disks[0]'),
    (dict(disks=[{'path': '/a.raw', 'backing_file': '/b.qcow2', 'image_type': 'raw'}]), 'disks[0].image_type'),
    (dict(disks=[{'path': '/a.raw', 'size': 1000}, {'path': '/b.raw', 'size': '1000B'}]), 'disks[1].size'),
    (dict(disks=[{'path': '/a.raw', 'id': 'x'}, {'path': '/b.raw', 'id': 'x'}]), 'disks[1].id'),
    (dict(networks=[{'bridge': 'br0', 'tap': 't0'}]), 'networks[0]'),
    (dict(networks=[{}]), 'networks[0]'),
    (dict(networks=[{'bridge': 'a-very-long-bridge-name'}]), 'networks[0].bridge'),
    (dict(networks=[{'bridge': 'br0', 'mac': '01:00:00:00:00:01'}]), 'networks[0].mac'),
    (dict(networks=[{'bridge': 'br0', 'mac': 'zz'}]), 'networks[0].mac'),
    (dict(networks=[{'bridge': 'br0', 'num_queues': 3}]), 'networks[0].num_queues'),
    (dict(networks=[{'bridge': 'br0', 'ip': '10.0.0.300'}]), 'networks[0].ip'),
    (dict(balloon={'size': '1G'}, memory='512M'), 'balloon.size'),
    (dict(vsock={'cid': 2}), 'vsock.cid'),
    (dict(extra_config=['x']), 'extra_config'),
])
def test_bad_options_name_the_option(params, option):
    with pytest.raises(OptionError) as err:
        norm(**params)
    assert err.value.option == option, err.value.msg


def test_image_type_defaults_from_extension():
    s = norm(disks=[{'path': '/a.qcow2'}, {'path': '/b.img'}, {'path': '/c.vhdx'}, {'path': '/d.vhd'},
                    {'path': '/e.raw', 'backing_file': '/base.img'}])
    assert [d['image_type'] for d in s['disks']] == ['qcow2', 'raw', 'vhdx', 'fixedvhd', 'qcow2']


def test_build_config_shape():
    s = norm(cpus=2, max_cpus=4, memory='1G', memory_hotplug='1G', cmdline='console=ttyS0',
             disks=[{'path': '/a.qcow2', 'rate_limit': {'bandwidth': 1000000, 'iops': 100}},
                    {'path': '/b.qcow2', 'backing_file': '/base.qcow2'}],
             networks=[{'bridge': 'br0', 'num_queues': 4, 'rate_limit': {'pps': 10}}],
             extra_config={'memory': {'thp': False}, 'watchdog': True})
    cfg = spec.build_config(s, '/s/serial.log', '/r/s.sock', '/r/c.sock', '/s/cidata.iso')
    assert cfg['cpus'] == {'boot_vcpus': 2, 'max_vcpus': 4}
    assert cfg['memory'] == {'size': 2 ** 30, 'hotplug_size': 2 ** 30, 'shared': False,
                             'hugepages': False, 'thp': False}
    assert cfg['watchdog'] is True
    assert cfg['payload'] == {'kernel': '/boot/vmlinux', 'cmdline': 'console=ttyS0'}
    assert cfg['serial'] == {'mode': 'File', 'file': '/s/serial.log'}
    assert cfg['console'] == {'mode': 'Off'}
    assert cfg['disks'][0]['image_type'] == 'Qcow2'
    assert cfg['disks'][0]['rate_limiter_config'] == {
        'bandwidth': {'size': 1000000, 'refill_time': 1000}, 'ops': {'size': 100, 'refill_time': 1000}}
    assert cfg['disks'][1]['backing_files'] is True
    assert cfg['disks'][2] == {'path': '/s/cidata.iso', 'readonly': True, 'direct': False,
                               'image_type': 'Raw', 'id': 'cidata'}
    net = cfg['net'][0]
    assert net['tap'].startswith('chv') and net['num_queues'] == 4 and net['id'] == 'net0'
    assert net['rate_limiter_config'] == {'ops': {'size': 10, 'refill_time': 1000}}


def test_subset_diff_ignores_ch_defaults_and_matches_devices_by_id():
    desired = {'cpus': {'boot_vcpus': 2}, 'disks': [{'id': 'disk0', 'path': '/a'}]}
    echo = {'cpus': {'boot_vcpus': 2, 'max_vcpus': 2, 'kvm_hyperv': False},
            'disks': [{'id': '_disk9', 'path': '/x'}, {'id': 'disk0', 'path': '/a', 'num_queues': 1}]}
    assert spec.subset_diff(desired, echo) == []
    echo['disks'][1]['path'] = '/b'
    assert spec.subset_diff(desired, echo) == ['disks[disk0].path']
    assert spec.subset_diff({'payload': {'kernel': '/k'}}, {}) == ['payload']
    assert spec.subset_diff({'a': [1, 2]}, {'a': [1, 2, 3]}) == ['a']


def test_deep_merge_does_not_mutate():
    base = {'memory': {'size': 1}, 'cpus': {'boot_vcpus': 1}}
    out = spec.deep_merge(base, {'memory': {'thp': True}, 'iommu': True})
    assert out == {'memory': {'size': 1, 'thp': True}, 'cpus': {'boot_vcpus': 1}, 'iommu': True}
    assert base == {'memory': {'size': 1}, 'cpus': {'boot_vcpus': 1}}


# --- an existing VM: options the task leaves unset keep the recorded values ---------------------

def _full_record():
    full = norm(cpus=2, max_cpus=4, memory='2G', memory_hotplug='1G', hugepages=True, shared_memory=True,
                balloon={'size': '256M', 'deflate_on_oom': True}, serial='null', console='pty',
                disks=[{'path': '/d/root.raw', 'size': '1G'}], networks=[{'bridge': 'br0'}],
                vsock={'cid': 9}, devices=['/dev/vfio/1'], platform={'uuid': 'u-1'},
                extra_config={'rng': {'src': '/dev/urandom'}})
    return {'spec': full}


def test_unset_options_keep_the_recorded_values():
    """An ad hoc `name=web1 state=running` used to mean cpus=1, memory=512M and no disks or NICs:
    the VM's disks and NICs were hot-removed and the record redefined (found in the demo)."""
    record = _full_record()
    again = spec.normalize({'name': 'web1'}, VM_DIR, 'host-a', record)
    assert again == record['spec']
    again['disks'][0]['path'] = '/changed'
    assert record['spec']['disks'][0]['path'] == '/d/root.raw', 'a copy, not the record itself'


def test_set_options_replace_the_recorded_ones():
    record = _full_record()
    out = spec.normalize({'name': 'web1', 'cpus': 3, 'memory': '4G', 'disks': [], 'networks': []},
                         VM_DIR, 'host-a', record)
    assert (out['cpus'], out['max_cpus'], out['memory']) == (3, 4, 4 << 30)
    assert out['disks'] == [] and out['networks'] == []
    assert out['balloon'] == record['spec']['balloon'] and out['vsock'] == record['spec']['vsock']


@pytest.mark.parametrize('option,empty,key', [
    ('balloon', {'size': None, 'deflate_on_oom': None, 'free_page_reporting': None}, 'balloon'),
    ('vsock', {'cid': None, 'socket': None}, 'vsock'),
    ('platform', {'uuid': None, 'serial_number': None, 'oem_strings': None}, 'platform'),
    ('extra_config', {}, 'extra_config'),
])
def test_an_empty_dict_removes_what_unset_keeps(option, empty, key):
    record = _full_record()
    assert spec.normalize({'name': 'web1'}, VM_DIR, 'host-a', record)[key]
    assert spec.normalize({'name': 'web1', option: empty}, VM_DIR, 'host-a', record)[key] is None


def test_max_cpus_kept_and_raised_with_cpus():
    record = {'spec': norm(cpus=2, max_cpus=4)}
    assert spec.normalize({'name': 'web1', 'cpus': 1}, VM_DIR, 'host-a', record)['max_cpus'] == 4
    assert spec.normalize({'name': 'web1', 'cpus': 6}, VM_DIR, 'host-a', record)['max_cpus'] == 6
    with pytest.raises(OptionError) as err:
        spec.normalize({'name': 'web1', 'cpus': 6, 'max_cpus': 4}, VM_DIR, 'host-a', record)
    assert err.value.option == 'cpus'


def test_balloon_checked_against_the_kept_memory():
    record = {'spec': norm(memory='4G')}
    out = spec.normalize({'name': 'web1', 'balloon': {'size': '1G'}}, VM_DIR, 'host-a', record)
    assert out['balloon']['size'] == 1 << 30 and out['memory'] == 4 << 30
    with pytest.raises(OptionError) as err:
        spec.normalize({'name': 'web1', 'balloon': {'size': '8G'}}, VM_DIR, 'host-a', record)
    assert err.value.option == 'balloon.size'


def test_a_new_vm_gets_the_defaults():
    out = norm()
    assert (out['cpus'], out['max_cpus'], out['memory'], out['memory_hotplug']) == (1, 1, 512 << 20, 0)
    assert out['disks'] == [] and out['networks'] == [] and out['balloon'] is None
    assert (out['serial'], out['console'], out['vsock'], out['platform']) == ('file', 'off', None, None)
