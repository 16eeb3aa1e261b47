"""ch_vm's option table (plugins/module_utils/vm_options.py): the argument spec it generates is
exactly the one ch_vm had before the table (frozen below), its new-VM defaults and 'unset keeps'
flags are what spec.normalize does, and its VmConfig paths are real, set by spec.build_config, and
marked live exactly where vm_plan.live_diff changes a running VM."""
import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils import spec, vm_options
from ansible_collections.cloudhv.ch.plugins.module_utils.vmconfig import SCHEMAS

VM_DIR = '/var/lib/cloudhv/vms/web1'

# The VmConfig paths vm_plan.live_diff changes on a running VM (resize of vCPUs, RAM and
# balloon; hot-add and hot-remove of disks and NICs); every other difference needs a restart. Kept
# here as data, not imported: a path the planner gains or loses must be changed in both places.
LIVE_DIFF_PATHS = {'cpus.boot_vcpus', 'memory.size', 'balloon.size', 'disks', 'net'}


# --- frozen: ch_vm's argument spec as of 8b331ea (before the table), with common.py's options ----
def frozen_argument_spec():
    common = dict(
        binary=dict(type='path', default='/usr/local/bin/cloud-hypervisor'),
        state_dir=dict(type='path', default='/var/lib/cloudhv'),
        run_dir=dict(type='path', default='/run/cloudhv'),
        api_timeout=dict(type='float', default=30.0),
    )
    own = dict(
        name=dict(type='str', required=True),
        state=dict(type='str', default='running',
                   choices=['running', 'present', 'stopped', 'paused', 'restarted', 'absent', 'standby']),
        clone_from=dict(type='dict', options=dict(
            vm=dict(type='str'), snapshot=dict(type='str'), path=dict(type='path'),
            memory_restore_mode=dict(type='str', default='copy', choices=['copy', 'ondemand']),
            prefault=dict(type='bool', default=False),
            disks=dict(type='str', default='copy', choices=['copy', 'overlay']))),
        # Unset (None) keeps the VM's recorded value (a clone's: its source's); a new VM gets the default
        # (see spec.normalize).
        cpus=dict(type='int'),
        max_cpus=dict(type='int'),
        memory=dict(type='raw'),
        memory_hotplug=dict(type='raw'),
        hugepages=dict(type='bool'),
        shared_memory=dict(type='bool'),
        balloon=dict(type='dict', options=dict(     # balloon: {} removes it (unset keeps it)
            size=dict(type='raw'),
            deflate_on_oom=dict(type='bool'),
            free_page_reporting=dict(type='bool'))),
        firmware=dict(type='path'),
        kernel=dict(type='path'),
        cmdline=dict(type='str'),
        initramfs=dict(type='path'),
        disks=dict(type='list', elements='dict', options=dict(
            path=dict(type='path', required=True),
            readonly=dict(type='bool', default=False),
            direct=dict(type='bool', default=False),
            image_type=dict(type='str', choices=['raw', 'qcow2', 'vhdx', 'fixedvhd']),
            id=dict(type='str'),
            serial=dict(type='str'),
            size=dict(type='raw'),
            backing_file=dict(type='path'),
            rate_limit=dict(type='dict', options=dict(bandwidth=dict(type='int'), iops=dict(type='int'))))),
        networks=dict(type='list', elements='dict', options=dict(
            bridge=dict(type='str'),
            tap=dict(type='str'),
            mac=dict(type='str'),
            address=dict(type='str'),
            ip=dict(type='str'),
            mask=dict(type='str'),
            mtu=dict(type='int'),
            num_queues=dict(type='int'),
            id=dict(type='str'),
            rate_limit=dict(type='dict', options=dict(bandwidth=dict(type='int'), pps=dict(type='int'))))),
        cloud_init=dict(type='dict', options=dict(
            user_data=dict(type='raw', no_log=True),
            meta_data=dict(type='dict'),
            network_config=dict(type='raw'))),
        serial=dict(type='str', choices=['off', 'null', 'pty', 'tty', 'file', 'socket']),
        console=dict(type='str', choices=['off', 'null', 'pty', 'tty', 'file', 'socket']),
        vsock=dict(type='dict', options=dict(cid=dict(type='int'), socket=dict(type='path'))),  # {} removes it
        devices=dict(type='list', elements='path'),
        platform=dict(type='dict', options=dict(
            uuid=dict(type='str'), serial_number=dict(type='str'),
            oem_strings=dict(type='list', elements='str'))),
        extra_config=dict(type='dict'),
        apply_changes=dict(type='str', default='live', choices=['live', 'restart', 'never']),
        stop_timeout=dict(type='float', default=30.0),
        force=dict(type='bool', default=False),
        purge=dict(type='bool', default=False),
        launcher=dict(type='str', choices=['auto', 'direct', 'systemd']),
        autostart=dict(type='bool', default=False),
    )
    return dict(common, **own)


def test_the_generated_argument_spec_is_the_frozen_one():
    """What a user sees (validation, defaults, choices) did not change with the table."""
    assert vm_options.argument_spec() == frozen_argument_spec()
    assert list(vm_options.argument_spec()) == list(frozen_argument_spec()), 'same order too'


def test_argument_spec_is_a_fresh_copy():
    first = vm_options.argument_spec()
    first['disks']['options']['path']['required'] = False
    first['clone_from']['options']['prefault']['default'] = True
    assert vm_options.argument_spec() == frozen_argument_spec()


def test_one_row_per_option():
    names = [row.name for row in vm_options.ROWS]
    assert len(names) == len(set(names))
    assert set(names) | {'binary', 'state_dir', 'run_dir', 'api_timeout'} == set(frozen_argument_spec())


# --- new-VM defaults and 'unset keeps the recorded value' -----------------------------------------

def test_an_option_that_keeps_its_recorded_value_has_no_argspec_default():
    """An argspec default would make the option never unset, so it could never keep anything."""
    for row in vm_options.ROWS:
        if row.keeps:
            assert 'default' not in row.spec, row.name
        elif 'default' in row.spec:
            assert vm_options.new_vm_default(row.name) == row.spec['default'], row.name


@pytest.mark.parametrize('option,value', [
    ('cpus', 1), ('max_cpus', 1), ('memory', '512M'), ('memory_hotplug', 0), ('hugepages', False),
    ('shared_memory', False), ('balloon', None), ('disks', []), ('networks', []), ('serial', 'file'),
    ('console', 'off'), ('vsock', None), ('devices', []), ('platform', None), ('extra_config', None),
    ('launcher', 'auto'), ('state', 'running'), ('apply_changes', 'live'), ('stop_timeout', 30.0),
    ('autostart', False), ('firmware', None), ('name', None),
])
def test_new_vm_defaults(option, value):
    assert vm_options.new_vm_default(option) == value


def test_new_vm_default_is_a_copy():
    vm_options.new_vm_default('disks').append('x')
    assert vm_options.new_vm_default('disks') == []


# spec keys that are the option of the same name (normalize parses memory and memory_hotplug)
SPEC_KEYS = ['cpus', 'max_cpus', 'memory', 'memory_hotplug', 'hugepages', 'shared_memory', 'balloon', 'disks',
             'networks', 'serial', 'console', 'vsock', 'devices', 'platform', 'extra_config']


def _new_vm(**params):
    unset = dict((row.name, None) for row in vm_options.ROWS)
    params = dict(dict(unset, name='web1', kernel='/boot/vmlinux'), **params)
    return spec.normalize(params, VM_DIR, 'host-a')


def test_normalize_gives_a_new_vm_the_tables_defaults():
    out = _new_vm()
    for key in SPEC_KEYS:
        want = vm_options.new_vm_default(key)
        if key in ('memory', 'memory_hotplug'):
            want = spec.parse_size(want, key, allow_zero=True)
        assert out[key] == want, key


def test_every_spec_option_the_table_says_keeps_is_kept():
    """A VM recorded with every option set, then a task that sets none: normalize keeps them all,
    payload (firmware, kernel, cmdline, initramfs) included."""
    full = _new_vm(cpus=2, max_cpus=4, memory='2G', memory_hotplug='1G', hugepages=True, shared_memory=True,
                   balloon={'size': '256M', 'deflate_on_oom': True, 'free_page_reporting': None},
                   cmdline='console=ttyS0', initramfs='/boot/initrd', serial='null', console='pty',
                   disks=[{'path': '/d/root.raw', 'size': '1G'}], networks=[{'bridge': 'br0'}],
                   vsock={'cid': 9, 'socket': None}, devices=['/dev/vfio/1'],
                   platform={'uuid': 'u-1', 'serial_number': None, 'oem_strings': None},
                   extra_config={'rng': {'src': '/dev/urandom'}})
    unset = dict((row.name, None) for row in vm_options.ROWS if row.keeps)
    again = spec.normalize(dict(unset, name='web1'), VM_DIR, 'host-a', {'spec': full})
    assert again == full
    for key in SPEC_KEYS:
        assert vm_options.keeps_recorded(key), key
    for option in ('firmware', 'kernel', 'cmdline', 'initramfs', 'cloud_init', 'launcher'):
        assert vm_options.keeps_recorded(option), option
    for option in ('name', 'state', 'clone_from', 'apply_changes', 'stop_timeout', 'force', 'purge', 'autostart'):
        assert not vm_options.keeps_recorded(option), option


# --- VmConfig paths and what can change live ------------------------------------------------------

def test_live_paths_are_the_ones_live_diff_applies():
    assert vm_options.live_paths() == LIVE_DIFF_PATHS
    for row in vm_options.ROWS:
        for path, kind in row.vmconfig:
            assert kind in (vm_options.LIVE, vm_options.RESTART), (row.name, path)
            if kind == vm_options.LIVE:
                assert path in LIVE_DIFF_PATHS, (row.name, path)
            else:
                assert path not in LIVE_DIFF_PATHS, (row.name, path)


@pytest.mark.parametrize('option,change', [
    ('cpus', 'live'), ('memory', 'live'), ('disks', 'live'), ('networks', 'live'), ('cloud_init', 'live'),
    ('balloon', 'partly live'), ('max_cpus', 'restart'), ('memory_hotplug', 'restart'), ('kernel', 'restart'),
    ('extra_config', 'restart'), ('state', 'n/a'), ('force', 'n/a'), ('purge', 'n/a'), ('apply_changes', 'n/a'),
])
def test_option_change_kind(option, change):
    assert vm_options.row(option).change == change


def _schema_has(path):
    schema = 'VmConfig'
    for field in path.split('.'):
        fields = SCHEMAS[schema]
        if field not in fields:
            return False
        schema = (fields[field] or '').strip('[]') or None
    return True


def test_paths_are_vmconfig_fields():
    for row in vm_options.ROWS:
        for path, _kind in row.vmconfig:
            assert path == vm_options.ANY or _schema_has(path), (row.name, path)


def _get(config, path):
    for field in path.split('.'):
        config = config[field]
    return config


def test_build_config_sets_every_path_of_the_table():
    """A VM with every VmConfig option set: each path the table names is in the config CH gets."""
    s = _new_vm(cpus=2, max_cpus=4, memory='2G', memory_hotplug='1G', hugepages=True, shared_memory=True,
                balloon={'size': '256M', 'deflate_on_oom': True, 'free_page_reporting': True},
                cmdline='console=ttyS0', initramfs='/boot/initrd', serial='null', console='pty',
                disks=[{'path': '/d/root.raw'}], networks=[{'bridge': 'br0'}],
                vsock={'cid': 9, 'socket': None}, devices=['/dev/vfio/1'],
                platform={'uuid': 'u-1', 'serial_number': None, 'oem_strings': None})
    config = spec.build_config(s, '/s/serial.log', '/r/s.sock', '/r/c.sock', '/s/cidata.iso')
    for path in (vm_options.live_paths() | vm_options.restart_paths()) - {vm_options.ANY, 'payload.firmware'}:
        _get(config, path)
    firmware = spec.build_config(_new_vm(kernel=None, firmware='/fw'), '/s/serial.log', '/r/s.sock', '/r/c.sock')
    assert _get(firmware, 'payload.firmware') == '/fw'
