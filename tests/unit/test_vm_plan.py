"""ch_vm's planner (plugins/module_utils/vm_plan.py), table-driven: an observation of the VM (vm.Observed,
as vm_engine builds it) and the task's request give an exact list of step actions; the facts the engine
gathers add file, DHCP and clean-up steps; live_diff tells live changes from restart-required ones; and
every action a plan can produce is one vm_executor.ACTIONS runs (and every action it runs is produced).

No host is touched: specs come from spec.normalize, configs from spec.build_config, and the live
config is that config as CH echoes it (with its defaults filled in)."""
import copy
import inspect

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils import spec as specmod
from ansible_collections.cloudhv.ch.plugins.module_utils import vm_engine, vm_executor, vm_options, vm_plan
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import HostError, StateError
from ansible_collections.cloudhv.ch.plugins.module_utils.vm import Observed
from ansible_collections.cloudhv.ch.plugins.module_utils.vm_plan import Step

MIB = 1024 * 1024
GIB = 1024 * MIB
HOST = 'unit-test-host'
NAME = 'web1'
VM_DIR = '/var/lib/cloudhv/vms/web1'
RUN_DIR = '/run/cloudhv'
BINARY = '/usr/local/bin/cloud-hypervisor'
KERNEL = '/boot/vmlinux'
PID = 4242
OLD_CEILING = 5 * GIB   # a ram_ceiling recorded by an earlier boot (differs from the config's)

OBS_STATES = ('absent', 'stopped', 'crashed', 'created', 'running', 'paused', 'standby')
REQUESTS = ('present', 'running', 'stopped', 'paused', 'restarted', 'standby')

# what the record says (run_state) for each observation (a crashed VM's record says it runs)
RECORDED_RUN_STATE = {'stopped': 'stopped', 'crashed': 'running', 'created': 'running', 'running': 'running',
                      'paused': 'paused', 'standby': 'standby'}


# --- building blocks ------------------------------------------------------------------------------
def make_spec(**params):
    """A normalized spec (spec.normalize) of web1: 2 of 4 vCPUs, 1 GiB + 1 GiB hotplug, a kernel,
    one bridge NIC and one disk unless ``params`` say otherwise."""
    base = dict(name=NAME, cpus=2, max_cpus=4, memory='1G', memory_hotplug='1G', kernel=KERNEL,
                networks=[{'bridge': 'br0'}], disks=[{'path': VM_DIR + '/root.qcow2', 'backing_file': '/img/base.qcow2'}])
    base.update(params)
    spec = specmod.normalize(base, VM_DIR, HOST)
    spec['cloud_init'] = None
    return spec


def make_config(spec):
    return specmod.build_config(spec, VM_DIR + '/serial.log', RUN_DIR + '/web1.serial.sock',
                                RUN_DIR + '/web1.console.sock',
                                VM_DIR + '/cidata.iso' if spec.get('cloud_init') else None)


SPEC = make_spec()
CONFIG = make_config(SPEC)
TAP = SPEC['networks'][0]['tap']
CEILING = 2 * GIB   # CONFIG's boot RAM plus its hotplug_size


def echo(config):
    """``config`` as CH's vm.info echoes it: the defaults CH fills in (extra keys the planner ignores)."""
    live = copy.deepcopy(config)
    live['cpus'].update(kvm_hyperv=False, max_phys_bits=46, nested=True)
    live['memory'].update(mergeable=False, hotplug_method='Acpi', prefault=False, thp=True)
    for disk in live.get('disks') or []:
        disk.update(num_queues=1, queue_size=128, vhost_user=False, pci_segment=0)
    for net in live.get('net') or []:
        net.update(num_queues=2, queue_size=256, vhost_user=False, pci_segment=0)
    live['rng']['pci_segment'] = 0
    live.update(iommu=False, watchdog=False, pvpanic=False)
    return live


def make_record(run_state, spec=None, config=None, **extra):
    """A record as the engine reads it (Layout.read_record stamps record_version and name)."""
    spec = SPEC if spec is None else spec
    config = CONFIG if config is None else config
    record = {'record_version': 1, 'name': NAME, 'spec': copy.deepcopy(spec), 'config': copy.deepcopy(config),
              'binary': BINARY, 'run_state': run_state, 'managed_files': [], 'ram_ceiling': OLD_CEILING}
    record.update(extra)
    return record


def observe(state, live_config=None, record=None):
    """The Observed vm.Vm.observe gives for a VM in ``state``; ``live_config``: the config the live VMM
    runs (CONFIG by default), echoed the way CH echoes it."""
    if state == 'absent':
        return Observed(None, None, None, 'absent')
    if record is None:
        record = make_record(RECORDED_RUN_STATE[state])
    if state in ('running', 'paused'):
        info = {'state': state.capitalize(), 'config': echo(CONFIG if live_config is None else live_config)}
        return Observed(record, PID, info, state)
    if state == 'created':
        return Observed(record, PID, None, 'created')
    return Observed(record, None, None, state)


def present(obs_state, state, facts=None, live_config=None, spec=None, config=None, cloud=None,
            apply_changes='live', launcher='auto', earlier=(), record=None, binary=BINARY):
    spec = SPEC if spec is None else spec
    config = CONFIG if config is None else config
    obs = observe(obs_state, live_config, record)
    return vm_plan.plan_present(obs, spec, config, cloud, state, dict(facts or {}), binary, launcher=launcher,
                                apply_changes=apply_changes, earlier=earlier)


def with_config(**changes):
    """CONFIG with dotted paths set (``memory__size=...`` sets config['memory']['size'])."""
    config = copy.deepcopy(CONFIG)
    for path, value in changes.items():
        keys = path.split('__')
        node = config
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return config


LIVE_CHANGE = dict(config=with_config(cpus__boot_vcpus=3))           # a vCPU resize within max_vcpus
RESTART_CHANGE = dict(config=with_config(payload={'kernel': '/boot/vmlinux-new'}))   # a new kernel
BOTH_CHANGES = dict(config=with_config(cpus__boot_vcpus=3, payload={'kernel': '/boot/vmlinux-new'}))


# --- target_state ---------------------------------------------------------------------------------
TARGETS = {   # requested state -> {observed state -> target}
    'present': {'absent': 'stopped', 'stopped': 'stopped', 'crashed': 'stopped', 'created': 'stopped',
                'running': 'running', 'paused': 'paused', 'standby': 'standby'},
    'running': dict((s, 'running') for s in OBS_STATES),
    'stopped': dict((s, 'stopped') for s in OBS_STATES),
    'paused': dict((s, 'paused') for s in OBS_STATES),
    'restarted': dict((s, 'running') for s in OBS_STATES),
    'standby': dict((s, 'standby') for s in OBS_STATES),
}


@pytest.mark.parametrize('state', REQUESTS)
@pytest.mark.parametrize('observed', OBS_STATES)
def test_target_state(observed, state):
    assert vm_plan.target_state(observed, state) == TARGETS[state][observed]


# --- plan_present: every observed state x every requested state (no config change) ------------------
# (observed, requested, actions); StateError: the planner refuses. The record says what the VM was last
# converged to (RECORDED_RUN_STATE) and its spec and config are the desired ones.
PRESENT = [
    ('absent', 'present', []),
    ('absent', 'running', ['start']),
    ('absent', 'stopped', []),
    ('absent', 'paused', ['start']),
    ('absent', 'restarted', ['start']),
    ('absent', 'standby', StateError),
    ('stopped', 'present', []),
    ('stopped', 'running', ['start']),
    ('stopped', 'stopped', []),
    ('stopped', 'paused', ['start']),
    ('stopped', 'restarted', ['start']),
    ('stopped', 'standby', StateError),
    ('crashed', 'present', ['cleanup_vmm']),
    ('crashed', 'running', ['cleanup_vmm', 'start']),
    ('crashed', 'stopped', ['cleanup_vmm']),
    ('crashed', 'paused', ['cleanup_vmm', 'start']),
    ('crashed', 'restarted', ['cleanup_vmm', 'start']),
    ('crashed', 'standby', StateError),
    ('created', 'present', ['stop']),
    ('created', 'running', ['stop_vmm', 'start']),     # a fresh VMM takes the new config
    ('created', 'stopped', ['stop']),
    ('created', 'paused', ['stop_vmm', 'start']),
    ('created', 'restarted', ['stop_vmm', 'start']),
    ('created', 'standby', StateError),
    ('running', 'present', []),
    ('running', 'running', []),
    ('running', 'stopped', ['stop']),
    ('running', 'paused', ['pause']),
    ('running', 'restarted', ['reboot']),
    ('running', 'standby', ['standby']),
    ('paused', 'present', []),
    ('paused', 'running', ['resume']),
    ('paused', 'stopped', ['stop']),
    ('paused', 'paused', []),
    ('paused', 'restarted', ['reboot']),
    ('paused', 'standby', ['standby']),
    # the engine wakes a standby VM (or discards its state) before it plans (vm_engine._identity); given a
    # standby observation the planner itself cold-starts the VM from its record
    ('standby', 'present', []),
    ('standby', 'running', ['start']),
    ('standby', 'stopped', []),
    ('standby', 'paused', ['start']),
    ('standby', 'restarted', ['start']),
    ('standby', 'standby', []),
]


def test_the_present_table_covers_every_observed_and_requested_state():
    assert sorted((o, s) for o, s, _actions in PRESENT) == sorted((o, s) for o in OBS_STATES for s in REQUESTS)


@pytest.mark.parametrize('observed, state, actions', PRESENT)
def test_plan_present(observed, state, actions):
    if actions is StateError:
        with pytest.raises(StateError) as info:
            present(observed, state, facts={'name': NAME})
        assert info.value.details['option'] == 'state'
        assert 'standby keeps the state of a running or paused VM, and web1 is %s' % observed in info.value.msg
        return
    plan = present(observed, state)
    assert plan.actions() == actions
    assert plan.target == TARGETS[state][observed]
    assert plan.record['run_state'] == plan.target
    assert plan.restart_required is False
    assert plan.warnings == []


# The full steps (arguments too) and the changes of the rows above that do something.
STEPS = [
    ('absent', 'running', [Step('start', paused=False)], ['start the VM']),
    ('absent', 'paused', [Step('start', paused=True)], ['start the VM']),
    ('stopped', 'restarted', [Step('start', paused=False)], ['start the VM']),
    ('crashed', 'stopped', [Step('cleanup_vmm')], ['clean up after the crashed VMM']),
    ('crashed', 'paused', [Step('cleanup_vmm'), Step('start', paused=True)], ['clean up after the crashed VMM', 'start the VM']),
    ('created', 'present', [Step('stop')], ['stop the VMM (VM not booted)']),
    ('created', 'paused', [Step('stop_vmm'), Step('start', paused=True)], ['start the VM']),
    ('running', 'stopped', [Step('stop')], ['stop the VM']),
    ('running', 'paused', [Step('pause')], ['pause the VM']),
    ('running', 'restarted', [Step('reboot')], ['reboot the VM']),
    ('paused', 'running', [Step('resume')], ['resume the VM']),
    ('paused', 'restarted', [Step('reboot')], ['reboot the VM']),
    ('running', 'standby', [Step('standby', run_state='running')],
     ['put the VM in standby: snapshot its memory into %s/standby and stop the VMM' % VM_DIR]),
    ('paused', 'standby', [Step('standby', run_state='paused')],
     ['put the VM in standby: snapshot its memory into %s/standby and stop the VMM' % VM_DIR]),
]


@pytest.mark.parametrize('observed, state, steps, changes', STEPS)
def test_plan_present_steps_and_changes(observed, state, steps, changes):
    plan = present(observed, state, facts={'standby_path': VM_DIR + '/standby'})
    assert plan.steps == steps
    assert plan.changes == changes


# --- idempotence and the record ---------------------------------------------------------------------
NO_CHANGE = [(o, s) for o, s, actions in PRESENT
             if actions == [] and RECORDED_RUN_STATE.get(o) == TARGETS[s][o]]


def test_the_no_change_cases_are_the_expected_ones():
    assert sorted(NO_CHANGE) == sorted([
        ('stopped', 'present'), ('stopped', 'stopped'), ('running', 'present'), ('running', 'running'),
        ('paused', 'present'), ('paused', 'paused'), ('standby', 'present'), ('standby', 'standby')])


@pytest.mark.parametrize('observed, state', NO_CHANGE)
def test_a_converged_vm_gives_an_empty_plan(observed, state):
    plan = present(observed, state)
    assert plan.steps == []
    assert plan.changes == []
    assert plan.restart_required is False
    # the record written back is the one read (record_version and name are stamped on write)
    assert dict(plan.record, record_version=1, name=NAME) == observe(observed).record


@pytest.mark.parametrize('observed, state, changes', [
    ('absent', 'present', ['update the record']),       # a new VM that stays stopped: only its record
    ('absent', 'stopped', ['update the record']),
    ('standby', 'stopped', ['update the record']),      # run_state standby -> stopped
])
def test_a_plan_without_steps_that_changes_the_record_says_so(observed, state, changes):
    plan = present(observed, state)
    assert plan.steps == []
    assert plan.changes == changes


@pytest.mark.parametrize('record_change, changes', [
    ({}, []),
    ({'binary': '/opt/ch/cloud-hypervisor'}, ['update the record']),          # a new binary: recorded, no restart
    ({'spec': dict(SPEC, serial='null')}, ['update the record']),
    ({'cloned_from': {'vm': 'base', 'snapshot': 's1'}}, []),                  # kept: the new record still has it
    ({'managed_files': ['/elsewhere/disk.raw']}, []),                          # managed_files is not compared
    ({'record_version': 1, 'name': 'whatever'}, []),                           # stamped on write
    ({'ram_ceiling': OLD_CEILING + GIB}, []),                                 # kept as it is (no boot)
])
def test_the_record_is_updated_when_it_differs(record_change, changes):
    record = make_record('stopped')
    record.update(record_change)
    plan = present('stopped', 'stopped', record=record)
    assert plan.steps == []
    assert plan.changes == changes
    assert plan.record['binary'] == BINARY and plan.record['spec'] == SPEC and plan.record['config'] == CONFIG


def test_changes_of_earlier_phases_make_the_record_update_no_change_of_its_own():
    record = make_record('stopped', binary='/opt/ch/cloud-hypervisor')
    plan = present('stopped', 'stopped', record=record, earlier=['discard the standby state in x'])
    assert plan.changes == [] and plan.steps == []
    assert plan.record['binary'] == BINARY


def test_a_plan_with_changes_adds_no_record_update():
    plan = present('stopped', 'running', record=make_record('stopped', binary='/opt/ch/cloud-hypervisor'))
    assert plan.changes == ['start the VM']


def test_the_new_record():
    plan = present('absent', 'running', facts={'leftover_managed': ['/data/web1-old.raw']})
    assert plan.record == {'spec': SPEC, 'config': CONFIG, 'binary': BINARY, 'run_state': 'running',
                           'managed_files': ['/data/web1-old.raw'], 'ram_ceiling': CEILING}


@pytest.mark.parametrize('observed, state, kwargs, ceiling', [
    ('absent', 'running', {}, CEILING),
    ('absent', 'paused', {}, CEILING),
    ('absent', 'present', {}, None),                       # a new VM that is not started has none
    ('stopped', 'running', {}, CEILING),
    ('crashed', 'running', {}, CEILING),
    ('created', 'running', {}, CEILING),
    ('stopped', 'stopped', {}, OLD_CEILING),               # no boot: the recorded one stays
    ('running', 'running', {}, OLD_CEILING),
    ('running', 'running', LIVE_CHANGE, OLD_CEILING),      # a live resize boots nothing
    ('running', 'restarted', {}, OLD_CEILING),             # a reboot keeps the VMM
    ('running', 'restarted', LIVE_CHANGE, CEILING),        # a restart boots a new VMM
    ('running', 'running', dict(RESTART_CHANGE, apply_changes='restart'), CEILING),
    ('running', 'stopped', {}, OLD_CEILING),
    ('running', 'standby', {}, OLD_CEILING),
])
def test_ram_ceiling_is_set_only_when_the_plan_boots_the_vmm(observed, state, kwargs, ceiling):
    kwargs = dict(kwargs)
    config = kwargs.pop('config', CONFIG)
    plan = present(observed, state, config=config, facts={'standby_path': VM_DIR + '/standby'}, **kwargs)
    assert plan.boots is (ceiling == CEILING)
    assert plan.record.get('ram_ceiling') == ceiling


def test_ram_ceiling_is_boot_ram_plus_hotplug():
    spec = make_spec(memory='3G', memory_hotplug=0)
    plan = present('stopped', 'running', spec=spec, config=make_config(spec))
    assert plan.record['ram_ceiling'] == 3 * GIB


@pytest.mark.parametrize('launcher, recorded, kept, changes', [
    ('auto', None, None, []),
    ('direct', None, None, []),
    ('systemd', None, 'systemd', ['update the record']),
    ('systemd', 'systemd', 'systemd', []),
    ('auto', 'systemd', None, ['update the record']),
    ('direct', 'systemd', None, ['update the record']),
])
def test_the_launcher_is_recorded_only_when_it_is_not_the_default(launcher, recorded, kept, changes):
    record = make_record('stopped')
    if recorded:
        record['launcher'] = recorded
    plan = present('stopped', 'stopped', record=record, launcher=launcher)
    assert plan.record.get('launcher') == kept
    assert plan.changes == changes
    assert plan.steps == []


@pytest.mark.parametrize('launcher', ['auto', 'direct', 'systemd'])
def test_the_launcher_does_not_change_the_steps(launcher):
    assert present('crashed', 'running', launcher=launcher).actions() == ['cleanup_vmm', 'start']
    assert present('running', 'restarted', launcher=launcher, **LIVE_CHANGE).actions() == ['restart']


# --- steps driven by the facts ----------------------------------------------------------------------
RAW_DISK = {'path': VM_DIR + '/data.raw', 'size': '10G'}
CLOUD = {'digest': 'd2', 'instance_id': 'i-2', 'hostname': NAME, 'files': {}}
CIDATA = VM_DIR + '/cidata.iso'


def raw_spec():
    return make_spec(disks=[{'path': VM_DIR + '/root.qcow2', 'backing_file': '/img/base.qcow2'}, RAW_DISK])


def cloud_spec(digest):
    spec = make_spec()
    spec['cloud_init'] = {'digest': digest, 'instance_id': 'i-' + digest[1:], 'hostname': NAME}
    return spec


DHCP_HOSTS = {'br1': {'hosts': 'x'}, 'br0': {'hosts': 'y'}}

# (observed, requested, facts, keyword arguments of plan_present, actions)
FACTS = [
    ('absent', 'running', {'missing_disks': [(0, SPEC['disks'][0])]}, {}, ['create_overlay', 'start']),
    ('absent', 'stopped', {'missing_disks': [(1, raw_spec()['disks'][1])]}, dict(spec=raw_spec()), ['create_raw']),
    ('absent', 'running', {'missing_disks': [(0, raw_spec()['disks'][0]), (1, raw_spec()['disks'][1])],
                           'cidata_path': CIDATA, 'cidata_exists': False, 'dhcp_hosts': DHCP_HOSTS},
     dict(spec=raw_spec(), cloud=CLOUD), ['create_overlay', 'create_raw', 'build_iso', 'dhcp_hosts', 'start']),
    # cloud-init: rebuilt when its digest changed or its image is gone
    ('stopped', 'stopped', {'cidata_path': CIDATA, 'cidata_exists': True},
     dict(spec=cloud_spec('d2'), cloud=CLOUD, record=make_record('stopped', spec=cloud_spec('d2'))), []),
    ('stopped', 'stopped', {'cidata_path': CIDATA, 'cidata_exists': False},
     dict(spec=cloud_spec('d2'), cloud=CLOUD, record=make_record('stopped', spec=cloud_spec('d2'))), ['build_iso']),
    ('stopped', 'stopped', {'cidata_path': CIDATA, 'cidata_exists': True},
     dict(spec=cloud_spec('d2'), cloud=CLOUD, record=make_record('stopped', spec=cloud_spec('d1'))), ['build_iso']),
    ('running', 'running', {'dhcp_hosts': DHCP_HOSTS}, {}, ['dhcp_hosts']),
    ('running', 'running', {'dhcp_hosts': {}}, {}, []),
    # stale run files and taps are cleaned up when the VM is to stay stopped
    ('stopped', 'stopped', {'stale_run_files': True}, {}, ['cleanup_vmm']),
    ('stopped', 'present', {'stale_run_files': True, 'stale_taps': [TAP]}, {}, ['cleanup_vmm', 'remove_taps']),
    ('crashed', 'stopped', {'stale_run_files': True, 'stale_taps': [TAP]}, {}, ['cleanup_vmm', 'remove_taps']),
    ('crashed', 'running', {'stale_run_files': True, 'stale_taps': [TAP]}, {}, ['cleanup_vmm', 'start']),
    ('stopped', 'running', {'stale_run_files': True, 'stale_taps': [TAP]}, {}, ['start']),
    ('stopped', 'stopped', {'stale_run_files': False, 'stale_taps': []}, {}, []),
]


@pytest.mark.parametrize('observed, state, facts, kwargs, actions', FACTS)
def test_steps_driven_by_facts(observed, state, facts, kwargs, actions):
    assert present(observed, state, facts=facts, **kwargs).actions() == actions


def test_file_steps_their_arguments_and_the_managed_files():
    spec = raw_spec()
    overlay, raw = spec['disks']
    plan = present('absent', 'running', spec=spec, config=make_config(spec), cloud=CLOUD,
                   facts={'missing_disks': [(0, overlay), (1, raw)], 'cidata_path': CIDATA, 'cidata_exists': False,
                          'dhcp_hosts': DHCP_HOSTS, 'leftover_managed': [overlay['path']]})
    assert plan.steps == [Step('create_overlay', disk=overlay, option='disks[0]'),
                          Step('create_raw', disk=raw, option='disks[1]'),
                          Step('build_iso', path=CIDATA),
                          Step('dhcp_hosts', hosts=DHCP_HOSTS),
                          Step('start', paused=False)]
    assert plan.changes == [
        'create qcow2 overlay %s/root.qcow2 on /img/base.qcow2' % VM_DIR,
        'create sparse raw image %s/data.raw (10G)' % VM_DIR,
        'build the cloud-init image %s' % CIDATA,
        'DHCP host entries (static leases and names) on br0, br1',
        'start the VM']
    # a path already known as ours is not listed twice
    assert plan.record['managed_files'] == [overlay['path'], raw['path'], CIDATA]


def test_stale_taps_step():
    plan = present('stopped', 'stopped', facts={'stale_taps': [TAP, 'chv0000000000ff']})
    assert plan.steps == [Step('remove_taps', taps=[TAP, 'chv0000000000ff'])]
    assert plan.changes == ['remove the stale taps %s, chv0000000000ff' % TAP]


def test_an_existing_vm_adds_missing_disks_to_its_managed_files():
    record = make_record('stopped', managed_files=['/keep/me'])
    plan = present('stopped', 'stopped', record=record, facts={'missing_disks': [(0, SPEC['disks'][0])]})
    assert plan.record['managed_files'] == ['/keep/me', SPEC['disks'][0]['path']]
    assert record['managed_files'] == ['/keep/me']          # the observation is not changed


MEMINFO_OK = {'available_bytes': 64 * GIB}
MEMINFO_LOW = {'available_bytes': 512 * MIB}


@pytest.mark.parametrize('observed, state, facts, warnings', [
    ('stopped', 'running', {'meminfo': MEMINFO_OK, 'host_cpus': 8}, []),
    ('stopped', 'running', {'meminfo': MEMINFO_LOW, 'host_cpus': 1},
     ["memory: the VM's 1G exceed the host's available memory (512M): the host is over-committed",
      "cpus: the VM's 2 vCPUs exceed the host's 1 CPUs"]),
    ('absent', 'paused', {'meminfo': MEMINFO_LOW, 'host_cpus': 8},
     ["memory: the VM's 1G exceed the host's available memory (512M): the host is over-committed"]),
    ('stopped', 'running', {'meminfo': MEMINFO_OK}, ["cpus: the VM's 2 vCPUs exceed the host's 1 CPUs"]),  # 1 CPU when unknown
    ('stopped', 'running', {'meminfo': None, 'host_cpus': 1}, []),       # no meminfo: no check
    ('stopped', 'stopped', {'meminfo': MEMINFO_LOW, 'host_cpus': 1}, []),  # not starting
    ('running', 'running', {'meminfo': MEMINFO_LOW, 'host_cpus': 1}, []),  # already live
])
def test_capacity_is_checked_when_the_plan_starts_the_vm(observed, state, facts, warnings):
    assert present(observed, state, facts=facts).warnings == warnings


# --- capacity_warnings ------------------------------------------------------------------------------
HUGE = 2 * MIB


@pytest.mark.parametrize('spec_params, mem, host_cpus, warnings', [
    ({}, {'available_bytes': GIB}, 2, []),                                 # exactly enough
    ({}, {'available_bytes': GIB - MIB}, 2,
     ["memory: the VM's 1G exceed the host's available memory (1023M): the host is over-committed"]),
    ({}, {}, 2, []),                                                        # unknown: no warning
    ({}, {'available_bytes': 0}, 2, []),
    ({'cpus': 4}, {'available_bytes': 8 * GIB}, 3, ["cpus: the VM's 4 vCPUs exceed the host's 3 CPUs"]),
    ({'hugepages': True}, {'hugepages_free': 512, 'hugepage_size_bytes': HUGE, 'available_bytes': 1}, 2, []),
    ({'hugepages': True, 'cpus': 4}, {'hugepages_free': 600, 'hugepage_size_bytes': HUGE}, 2,
     ["cpus: the VM's 4 vCPUs exceed the host's 2 CPUs"]),
])
def test_capacity_warnings(spec_params, mem, host_cpus, warnings):
    assert vm_plan.capacity_warnings(make_spec(**spec_params), mem, host_cpus) == warnings


@pytest.mark.parametrize('mem, words', [
    ({'hugepages_free': 511, 'hugepage_size_bytes': HUGE}, 'needs 1G of hugepages but only 1022M are free (511 pages of 2M)'),
    ({'hugepages_free': 0, 'hugepage_size_bytes': HUGE}, 'needs 1G of hugepages but only 0B are free (0 pages of 2M)'),
    ({}, 'needs 1G of hugepages but only 0B are free (None pages of 0B)'),
])
def test_capacity_refuses_missing_hugepages(mem, words):
    with pytest.raises(HostError) as info:
        vm_plan.capacity_warnings(make_spec(hugepages=True), mem, 8)
    assert words in info.value.msg
    assert info.value.details['option'] == 'hugepages'


def test_missing_hugepages_fail_the_plan_of_a_start():
    spec = make_spec(hugepages=True)
    with pytest.raises(HostError):
        present('stopped', 'running', spec=spec, config=make_config(spec),
                facts={'meminfo': {'hugepages_free': 0, 'hugepage_size_bytes': HUGE}, 'host_cpus': 8})


# --- live_diff ----------------------------------------------------------------------------------------
NIC1 = {'bridge': 'br1'}


def nic_spec():
    return make_spec(networks=[{'bridge': 'br0'}, NIC1])


def disk_spec():
    return make_spec(disks=[{'path': VM_DIR + '/root.qcow2', 'backing_file': '/img/base.qcow2'},
                            {'path': '/data/extra.raw', 'size': '1G', 'id': 'extra'}])


def balloon_spec(size='256M', deflate=False):
    return make_spec(balloon={'size': size, 'deflate_on_oom': deflate})


def live_of(config, **changes):
    """The echo of ``config`` with dotted paths changed (``memory__hotplugged_size=...``)."""
    live = echo(config)
    for path, value in changes.items():
        keys = path.split('__')
        node = live
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return live


# (desired spec, desired config, live echo, ram_ceiling, [step actions with args], restart paths)
LIVE_DIFF = [
    pytest.param(SPEC, CONFIG, echo(CONFIG), None, [], [], id='no-change'),
    # vCPUs
    pytest.param(SPEC, with_config(cpus__boot_vcpus=4), echo(CONFIG), None, [Step('resize', desired_vcpus=4)], [], id='cpus-up'),
    pytest.param(SPEC, with_config(cpus__boot_vcpus=1), echo(CONFIG), None, [Step('resize', desired_vcpus=1)], [], id='cpus-down'),
    pytest.param(SPEC, with_config(cpus__boot_vcpus=5, cpus__max_vcpus=8), echo(CONFIG), None, [],
                 ['cpus', 'cpus.max_vcpus'], id='cpus-above-max'),
    pytest.param(SPEC, with_config(cpus__max_vcpus=8), echo(CONFIG), None, [], ['cpus.max_vcpus'], id='max-cpus'),
    # RAM: growth in 128 MiB DIMMs up to boot RAM + hotplug_size (and the recorded ceiling)
    pytest.param(SPEC, with_config(memory__size=2 * GIB), echo(CONFIG), None, [Step('resize', desired_ram=2 * GIB)], [],
                 id='ram-grow'),
    pytest.param(SPEC, with_config(memory__size=GIB + 128 * MIB), echo(CONFIG), None,
                 [Step('resize', desired_ram=GIB + 128 * MIB)], [], id='ram-grow-one-dimm'),
    pytest.param(SPEC, with_config(memory__size=GIB + 64 * MIB), echo(CONFIG), None, [], ['memory'], id='ram-not-a-dimm'),
    pytest.param(SPEC, with_config(memory__size=2 * GIB + 128 * MIB), echo(CONFIG), None, [], ['memory'],
                 id='ram-above-hotplug'),
    pytest.param(SPEC, with_config(memory__size=512 * MIB), echo(CONFIG), None, [], ['memory'], id='ram-shrink'),
    pytest.param(SPEC, with_config(memory__size=2 * GIB, memory__hotplug_size=2 * GIB), echo(CONFIG), None, [],
                 ['memory', 'memory.hotplug_size'], id='ram-with-new-hotplug-size'),
    pytest.param(SPEC, CONFIG, live_of(CONFIG, memory__hotplugged_size=512 * MIB), None, [], ['memory'],
                 id='ram-grown-live-shrinks-back'),
    # after a growth CH echoes the grown size as memory.size: the recorded ceiling bounds it
    pytest.param(SPEC, with_config(memory__size=2 * GIB + 512 * MIB), live_of(CONFIG, memory__size=2 * GIB), None,
                 [Step('resize', desired_ram=2 * GIB + 512 * MIB)], [], id='ram-grow-again-without-ceiling'),
    pytest.param(SPEC, with_config(memory__size=2 * GIB + 512 * MIB), live_of(CONFIG, memory__size=2 * GIB), CEILING,
                 [], ['memory'], id='ram-grow-beyond-recorded-ceiling'),
    pytest.param(SPEC, with_config(memory__size=2 * GIB), live_of(CONFIG, memory__size=GIB + 512 * MIB), CEILING,
                 [Step('resize', desired_ram=2 * GIB)], [], id='ram-grow-within-recorded-ceiling'),
    pytest.param(SPEC, with_config(memory__hugepages=True), echo(CONFIG), None, [], ['memory.hugepages'], id='hugepages'),
    # balloon
    pytest.param(balloon_spec(), make_config(balloon_spec('512M')), echo(make_config(balloon_spec())), None,
                 [Step('resize', desired_balloon=512 * MIB)], [], id='balloon-size'),
    pytest.param(balloon_spec(), make_config(balloon_spec(deflate=True)), echo(make_config(balloon_spec())), None,
                 [], ['balloon.deflate_on_oom'], id='balloon-option'),
    pytest.param(balloon_spec(), make_config(balloon_spec()), echo(CONFIG), None, [], ['balloon'], id='balloon-added'),
    # payload and the rest
    pytest.param(SPEC, RESTART_CHANGE['config'], echo(CONFIG), None, [], ['payload.kernel'], id='kernel'),
    pytest.param(SPEC, with_config(serial={'mode': 'Null'}), echo(CONFIG), None, [], ['serial.mode'],
                 id='serial'),
    pytest.param(SPEC, with_config(vsock={'cid': 3, 'socket': VM_DIR + '/vsock.sock'}), echo(CONFIG), None, [], ['vsock'],
                 id='vsock-added'),
    # disks: hot-add, hot-remove, a changed disk is removed and added again
    pytest.param(disk_spec(), make_config(disk_spec()), echo(CONFIG), None,
                 [Step('add_disk', config=make_config(disk_spec())['disks'][1])], [], id='disk-added'),
    pytest.param(SPEC, CONFIG, echo(make_config(disk_spec())), None, [Step('hot_remove', id='extra', tap=None)], [],
                 id='disk-removed'),
    pytest.param(SPEC, with_config(disks=[dict(CONFIG['disks'][0], readonly=True)]), echo(CONFIG), None,
                 [Step('remove_device', id='disk0'), Step('add_disk', config=dict(CONFIG['disks'][0], readonly=True))], [],
                 id='disk-changed'),
    # NICs: hot-add with the spec's NIC (its tap is made first), hot-remove with the tap to delete
    pytest.param(nic_spec(), make_config(nic_spec()), echo(CONFIG), None,
                 [Step('add_net', config=make_config(nic_spec())['net'][1], net=nic_spec()['networks'][1])], [],
                 id='nic-added'),
    pytest.param(SPEC, CONFIG, echo(make_config(nic_spec())), None,
                 [Step('hot_remove', id='net1', tap=nic_spec()['networks'][1]['tap'])], [], id='nic-removed'),
    pytest.param(SPEC, with_config(net=[dict(CONFIG['net'][0], mtu=9000)]), echo(CONFIG), None,
                 [Step('remove_device', id='net0'),
                  Step('add_net', config=dict(CONFIG['net'][0], mtu=9000), net=SPEC['networks'][0])], [], id='nic-changed'),
    # several at once: the live ones in order, the restart paths listed
    pytest.param(SPEC, BOTH_CHANGES['config'], echo(CONFIG), None, [Step('resize', desired_vcpus=3)], ['payload.kernel'],
                 id='live-and-restart'),
]


@pytest.mark.parametrize('spec, config, live, ceiling, steps, restart', LIVE_DIFF)
def test_live_diff(spec, config, live, ceiling, steps, restart):
    ops, paths = vm_plan.live_diff(config, live, spec, ceiling)
    assert [step for _change, step in ops] == steps
    assert sorted(paths) == sorted(restart)


# Removing a device whose presence is restart-only (vm_options: balloon, vsock, platform, devices are
# RESTART; balloon: {} and vsock: {} remove them): the desired config then has no such key, which
# spec.subset_diff (it compares only what the desired config sets) would not see.
REMOVED = [
    ('balloon', balloon_spec()),
    ('vsock', make_spec(vsock={'cid': 3})),
    ('platform', make_spec(platform={'serial_number': 'abc'})),
    ('devices', make_spec(devices=['/sys/bus/pci/devices/0000:01:00.0'])),
]


@pytest.mark.parametrize('key, before', REMOVED, ids=[r[0] for r in REMOVED])
def test_live_diff_sees_a_removed_restart_only_device(key, before):
    live = echo(make_config(before))
    assert key in live
    _ops, paths = vm_plan.live_diff(CONFIG, live, SPEC)
    assert paths == [key]


def test_every_live_op_is_on_a_live_path():
    """live_diff changes a running VM only on vm_plan.LIVE_PATHS (which vm_options' table agrees with)."""
    assert set(vm_plan.LIVE_PATHS) == vm_options.live_paths()
    where = {'desired_vcpus': 'cpus.boot_vcpus', 'desired_ram': 'memory.size', 'desired_balloon': 'balloon.size'}
    seen = set()
    for param in LIVE_DIFF:
        spec, config, live, ceiling = param.values[:4]
        for _change, step in vm_plan.live_diff(config, live, spec, ceiling)[0]:
            if step.action == 'resize':
                (arg,) = step.args
                seen.add(where[arg])
            else:
                seen.add('net' if step.action == 'add_net' or (step.args.get('id') or '').startswith('net') else 'disks')
    assert seen == set(vm_plan.LIVE_PATHS)


# --- plan_live: apply_changes and the live run-state changes ------------------------------------------
# (observed, requested, desired config, apply_changes, actions, restart_required)
LIVE = [
    # a live change
    ('running', 'running', LIVE_CHANGE, 'live', ['resize'], False),
    ('running', 'running', LIVE_CHANGE, None, ['resize'], False),          # unset is live
    ('running', 'running', LIVE_CHANGE, 'restart', ['resize'], False),     # live ops need no restart
    ('running', 'running', LIVE_CHANGE, 'never', [], True),
    ('running', 'present', LIVE_CHANGE, 'live', ['resize'], False),
    ('running', 'paused', LIVE_CHANGE, 'live', ['resize', 'pause'], False),
    ('paused', 'paused', LIVE_CHANGE, 'live', [], True),                   # a paused guest takes none
    ('paused', 'present', LIVE_CHANGE, 'live', [], True),
    ('paused', 'running', LIVE_CHANGE, 'live', ['resume', 'resize'], False),
    ('paused', 'running', LIVE_CHANGE, 'never', ['resume'], True),
    ('running', 'stopped', LIVE_CHANGE, 'live', ['stop'], False),
    ('paused', 'stopped', LIVE_CHANGE, 'live', ['stop'], False),
    ('running', 'restarted', LIVE_CHANGE, 'live', ['restart'], False),
    ('running', 'restarted', LIVE_CHANGE, 'never', ['reboot'], False),
    ('paused', 'restarted', LIVE_CHANGE, 'live', ['restart'], False),
    ('running', 'standby', LIVE_CHANGE, 'live', ['standby'], False),       # the record carries the change
    # a change that needs a restart
    ('running', 'running', RESTART_CHANGE, 'live', [], True),
    ('running', 'running', RESTART_CHANGE, None, [], True),
    ('running', 'running', RESTART_CHANGE, 'never', [], True),
    ('running', 'running', RESTART_CHANGE, 'restart', ['restart'], False),
    ('running', 'present', RESTART_CHANGE, 'restart', ['restart'], False),
    ('running', 'paused', RESTART_CHANGE, 'restart', ['restart'], False),
    ('running', 'paused', RESTART_CHANGE, 'live', ['pause'], True),
    ('paused', 'paused', RESTART_CHANGE, 'restart', ['restart'], False),
    ('paused', 'running', RESTART_CHANGE, 'live', ['resume'], True),
    ('paused', 'running', RESTART_CHANGE, 'restart', ['restart'], False),
    ('running', 'stopped', RESTART_CHANGE, 'live', ['stop'], False),       # the next start applies it
    ('running', 'stopped', RESTART_CHANGE, 'never', ['stop'], False),
    ('running', 'stopped', RESTART_CHANGE, 'restart', ['stop'], False),    # stopped wins over restart
    ('paused', 'stopped', RESTART_CHANGE, 'restart', ['stop'], False),
    ('running', 'restarted', RESTART_CHANGE, 'live', ['restart'], False),
    ('running', 'restarted', RESTART_CHANGE, 'never', ['restart'], False),   # state=restarted restarts anyway
    # both
    ('running', 'running', BOTH_CHANGES, 'live', ['resize'], True),
    ('running', 'running', BOTH_CHANGES, 'restart', ['restart'], False),
    ('running', 'running', BOTH_CHANGES, 'never', [], True),
]


def _live_id(value):
    names = {id(LIVE_CHANGE): 'live-change', id(RESTART_CHANGE): 'restart-change', id(BOTH_CHANGES): 'both-changes'}
    if isinstance(value, dict):
        return names[id(value)]
    if isinstance(value, list):
        return '+'.join(value) or 'no-steps'
    return str(value)


@pytest.mark.parametrize('observed, state, desired, apply_changes, actions, restart_required', LIVE, ids=_live_id)
def test_plan_live(observed, state, desired, apply_changes, actions, restart_required):
    plan = present(observed, state, config=desired['config'], apply_changes=apply_changes,
                   facts={'standby_path': VM_DIR + '/standby'})
    assert plan.actions() == actions
    assert plan.restart_required is restart_required
    assert plan.record['config'] == desired['config']       # the record carries the desired config
    assert plan.record['run_state'] == TARGETS[state][observed]


@pytest.mark.parametrize('observed, state, desired, apply_changes, steps, changes', [
    ('running', 'running', LIVE_CHANGE, 'live', [Step('resize', desired_vcpus=3)], ['resize vCPUs 2 -> 3']),
    ('running', 'running', RESTART_CHANGE, 'restart', [Step('restart', paused=False)],
     ['restart the VM to apply payload.kernel']),
    ('paused', 'paused', RESTART_CHANGE, 'restart', [Step('restart', paused=True)],
     ['restart the VM to apply payload.kernel']),
    ('running', 'restarted', BOTH_CHANGES, 'live', [Step('restart', paused=False)],
     ['restart the VM (stop and start) to apply payload.kernel, resize vCPUs 2 -> 3']),
    ('paused', 'restarted', RESTART_CHANGE, 'live', [Step('restart', paused=False)],
     ['restart the VM (stop and start) to apply payload.kernel']),
    ('running', 'running', RESTART_CHANGE, 'live', [], []),   # only restart_required (and the record)
])
def test_plan_live_steps_and_changes(observed, state, desired, apply_changes, steps, changes):
    plan = present(observed, state, config=desired['config'], apply_changes=apply_changes)
    assert plan.steps == steps
    assert plan.changes == (changes or ['update the record'])


def test_a_live_vm_with_a_changed_record_but_the_same_config_changes_only_the_record():
    plan = present('running', 'running', spec=dict(SPEC, serial='file'), record=make_record('running', binary='/old/ch'))
    assert plan.steps == [] and plan.restart_required is False
    assert plan.changes == ['update the record']


def test_the_ram_ceiling_of_the_record_bounds_live_growth():
    grown = with_config(memory__size=2 * GIB + 512 * MIB)
    live = with_config(memory__size=2 * GIB)        # grown earlier: CH echoes the grown size
    plan = present('running', 'running', config=grown, live_config=live, record=make_record('running', ram_ceiling=CEILING))
    assert plan.actions() == [] and plan.restart_required is True
    plan = present('running', 'running', config=grown, live_config=live, record=make_record('running', ram_ceiling=None))
    assert plan.steps == [Step('resize', desired_ram=2 * GIB + 512 * MIB)] and plan.restart_required is False


# --- plan_absent --------------------------------------------------------------------------------------
LEASE = {'ip': '10.1.0.5', 'mac': SPEC['networks'][0]['mac']}
USER_DISK = '/data/web1-user.raw'
PURGE_SPEC = make_spec(disks=[{'path': VM_DIR + '/root.qcow2', 'backing_file': '/img/base.qcow2'},
                              {'path': USER_DISK, 'size': '1G'}])
PURGE_RECORD = make_record('stopped', spec=PURGE_SPEC, managed_files=[VM_DIR + '/root.qcow2', CIDATA, VM_DIR + '/root.qcow2'])


def absent_obs(observed, record=None):
    if observed == 'orphan':          # a VMM without a record (a run killed before it wrote one)
        return Observed(None, PID, None, 'absent')
    return observe(observed, record=record)


# (observed, facts, purge, record, actions)
ABSENT = [
    ('absent', {}, False, None, []),
    ('absent', {'vm_dir': VM_DIR, 'vm_dir_exists': False}, True, None, []),
    ('absent', {'vm_dir': VM_DIR, 'vm_dir_exists': True}, True, None, ['purge']),    # leftover files of an earlier VM
    ('absent', {'stale_run_files': True}, False, None, ['cleanup_vmm']),
    ('orphan', {'stale_run_files': True}, False, None, ['stop_vmm']),
    ('stopped', {}, False, None, ['remove_record']),
    ('stopped', {'stale_run_files': True}, False, None, ['cleanup_vmm', 'remove_record']),
    ('crashed', {'stale_run_files': True, 'present_taps': [TAP]}, False, None, ['cleanup_vmm', 'remove_taps', 'remove_record']),
    ('running', {}, False, None, ['stop_vmm', 'remove_record']),
    ('running', {'stale_run_files': True, 'present_taps': [TAP]}, False, None, ['stop_vmm', 'remove_taps', 'remove_record']),
    ('paused', {'present_taps': [TAP], 'dhcp_files': {'br0': {}}, 'dhcp_leases': [('br0', LEASE)]}, False, None,
     ['stop_vmm', 'remove_taps', 'dhcp_remove', 'remove_record']),
    ('created', {}, False, None, ['stop_vmm', 'remove_record']),
    ('standby', {}, False, None, ['remove_record']),
    ('running', {'vm_dir': VM_DIR, 'vm_dir_exists': True}, True, PURGE_RECORD, ['stop_vmm', 'remove_record', 'purge']),
    ('stopped', {'vm_dir': VM_DIR, 'vm_dir_exists': True}, False, PURGE_RECORD, ['remove_record']),
    ('stopped', {'vm_dir': VM_DIR, 'vm_dir_exists': False}, True, PURGE_RECORD, ['remove_record']),
    # removed without purge earlier: managed.json still names a managed disk outside the VM's directory
    ('absent', {'vm_dir': VM_DIR, 'vm_dir_exists': False, 'leftover_managed': [USER_DISK]}, True, None, ['purge']),
    ('absent', {'vm_dir': VM_DIR, 'vm_dir_exists': True, 'leftover_managed': [USER_DISK]}, False, None, []),
]


@pytest.mark.parametrize('observed, facts, purge, record, actions', ABSENT)
def test_plan_absent(observed, facts, purge, record, actions):
    plan = vm_plan.plan_absent(absent_obs(observed, record), facts, purge)
    assert plan.actions() == actions
    assert plan.restart_required is False and plan.warnings == [] and plan.record is None


def test_plan_absent_steps_and_changes():
    obs = absent_obs('running', PURGE_RECORD)
    facts = {'present_taps': [TAP], 'dhcp_files': {'br0': {'hosts': 'h'}, 'br2': {}},
             'dhcp_leases': [('br1', LEASE), ('br0', dict(LEASE, ip='10.1.0.6'))],
             'vm_dir': VM_DIR, 'vm_dir_exists': True}
    plan = vm_plan.plan_absent(obs, facts, True)
    assert plan.steps == [
        Step('stop_vmm'),
        Step('remove_taps', taps=[TAP]),
        Step('dhcp_remove', files=facts['dhcp_files'], leases=facts['dhcp_leases']),
        Step('remove_record', managed=PURGE_RECORD['managed_files'], purge=True),
        Step('purge', managed=[CIDATA, VM_DIR + '/root.qcow2'], user_disks=[USER_DISK]),   # sorted, once each
    ]
    assert plan.changes == [
        'stop the VMM (pid %d)' % PID,
        'remove taps %s' % TAP,
        'remove the DHCP host entries and names of the VM on br0, br1, br2 and release its leases (10.1.0.5, 10.1.0.6)',
        'remove the record',
        'purge %s (managed disks, cloud-init image, logs, snapshots)' % VM_DIR,
    ]


def test_plan_absent_purges_the_files_managed_json_names():
    facts = {'vm_dir': VM_DIR, 'vm_dir_exists': True, 'leftover_managed': ['/data/scratch.raw', CIDATA]}
    plan = vm_plan.plan_absent(absent_obs('absent'), facts, True)
    assert plan.steps == [Step('purge', managed=['/data/scratch.raw', CIDATA], user_disks=[])]   # sorted


def test_plan_absent_dhcp_files_without_leases():
    plan = vm_plan.plan_absent(absent_obs('stopped'), {'dhcp_files': {'br0': {}}}, False)
    assert plan.changes == ['remove the DHCP host entries and names of the VM on br0', 'remove the record']


# --- every action is one the executor knows, and every one it knows is planned somewhere ---------------
def _table_plans():
    """The plans of every row of the tables above (the rows that plan; xfail rows included)."""
    for observed, state, actions in PRESENT:
        if actions is not StateError:
            yield present(observed, state)
    for observed, state, _steps, _changes in STEPS:
        yield present(observed, state, facts={'standby_path': VM_DIR + '/standby'})
    for observed, state, facts, kwargs, _actions in FACTS:
        yield present(observed, state, facts=facts, **kwargs)
    for row in LIVE:
        observed, state, desired, apply_changes = (row.values if hasattr(row, 'values') else row)[:4]
        yield present(observed, state, config=desired['config'], apply_changes=apply_changes,
                      facts={'standby_path': VM_DIR + '/standby'})
    for param in LIVE_DIFF:
        spec, config, live, ceiling = param.values[:4]
        plan = vm_plan.Plan()
        for change, step in vm_plan.live_diff(config, live, spec, ceiling)[0]:
            plan.add(change, step)
        yield plan
    for observed, facts, purge, record, _actions in ABSENT:
        yield vm_plan.plan_absent(absent_obs(observed, record), facts, purge)


# Actions the engine plans itself, outside vm_plan: _remove_unreadable (state=absent force=true for a
# record that cannot be read) removes the console sockets and the record with remove_files.
ENGINE_ONLY = {'remove_files'}


def test_every_planned_action_is_one_the_executor_runs_and_the_other_way_round():
    produced = set()
    for plan in _table_plans():
        produced.update(plan.actions())
    assert produced - set(vm_executor.ACTIONS) == set()
    assert set(vm_executor.ACTIONS) - produced == ENGINE_ONLY
    # the expected lists of the tables name only real actions too
    expected = set(a for _o, _s, actions in PRESENT if actions is not StateError for a in actions)
    for table, index in ((FACTS, 4), (ABSENT, 4)):
        expected.update(a for row in table for a in row[index])
    expected.update(a for row in LIVE for a in (row.values if hasattr(row, 'values') else row)[4])
    assert expected - set(vm_executor.ACTIONS) == set()


def test_the_engine_only_actions_are_planned_by_the_engine():
    source = inspect.getsource(vm_engine.VmEngine._remove_unreadable)
    for action in ENGINE_ONLY:
        assert "Step('%s'" % action in source
    assert set(vm_executor.ACTIONS) >= ENGINE_ONLY


def test_step_equality_and_plan_helpers():
    assert Step('resize', desired_vcpus=2) == Step('resize', desired_vcpus=2)
    assert Step('resize', desired_vcpus=2) != Step('resize', desired_vcpus=3)
    assert Step('stop') != 'stop'
    assert repr(Step('start', paused=True)) == "Step('start', paused=True)"
    plan = vm_plan.Plan()
    plan.add(None, Step('stop_vmm'))       # a step without a change of its own
    plan.add('text only')
    assert plan.actions() == ['stop_vmm'] and plan.changes == ['text only'] and plan.boots is False
    plan.add('restart', Step('restart'))
    assert plan.boots is True
