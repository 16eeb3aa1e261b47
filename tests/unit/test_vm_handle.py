"""The ``Vm`` handle (plugins/module_utils/vm.py): public_spec, Observed, what observe() sees (no VMM, a
dead or reused pid, a VMM of the CH simulator with no VM, a running or paused VM), start/stop/teardown
and restore (nothing left behind on failure), the taps it manages (and only those), and the shape of
ch_vm's ``vm`` result. state_dir and run_dir are temporary; netlink is a fake (no namespaces, no
privileges); the VMM is the CH simulator (tests/simulator), started only where a test needs one."""
import os
import subprocess

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils import netlink as netlink_mod
from ansible_collections.cloudhv.ch.plugins.module_utils import spec as specmod
from ansible_collections.cloudhv.ch.plugins.module_utils import vm_record
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import ChApiError, OptionError, VmmError
from ansible_collections.cloudhv.ch.plugins.module_utils.process import proc_cmdline
from ansible_collections.cloudhv.ch.plugins.module_utils.store import Layout, write_json_atomic
from ansible_collections.cloudhv.ch.plugins.module_utils.vm import LIVE_STATES, Observed, Vm, public_spec

from tests.simulator.install import install_launcher

NAME = 'web1'
HOST = 'unit-test-host'
USER_TAP = 'usertap0'
FOREIGN_TAP = 'chv999999999999'   # a tap of the collection's shape that is not this VM's


# --- fakes ------------------------------------------------------------------------------------------
class FakeNetlink:
    """The links of a fake network namespace; the calls the handle makes."""

    instances = []

    def __init__(self):
        self.links_by_name = {}
        self.calls = []
        self.entered = self.exited = 0
        FakeNetlink.instances.append(self)

    def __enter__(self):
        self.entered += 1
        return self

    def __exit__(self, *exc):
        self.exited += 1

    def add(self, name, kind='tun', master=None):
        self.links_by_name[name] = {'name': name, 'kind': kind, 'master': master}

    def link(self, name):
        self.calls.append(('link', name))
        return self.links_by_name.get(name)

    def links(self):
        return list(self.links_by_name.values())

    def ensure_tap(self, name, bridge, multi_queue=False, mtu=None):
        self.calls.append(('ensure_tap', name, bridge, multi_queue, mtu))
        self.add(name, master=bridge)

    def delete_link(self, name):
        self.calls.append(('delete_link', name))
        self.links_by_name.pop(name, None)

    def names(self):
        return sorted(self.links_by_name)


class FakeClient:
    def __init__(self):
        self.calls = []

    def add_net(self, cfg):
        self.calls.append(('add_net', cfg['id']))

    def remove_device(self, dev_id):
        self.calls.append(('remove_device', dev_id))


# --- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def sim_binary(tmp_path_factory):
    return install_launcher(str(tmp_path_factory.mktemp('sim') / 'cloud-hypervisor'))


@pytest.fixture
def nl(monkeypatch):
    """The fake netlink every Vm.netlink() of the test opens (one per handle)."""
    FakeNetlink.instances = []
    monkeypatch.setattr(netlink_mod, 'Netlink', FakeNetlink)

    def current():
        assert len(FakeNetlink.instances) == 1
        return FakeNetlink.instances[0]
    return current


@pytest.fixture
def layout(tmp_path):
    return Layout(str(tmp_path / 'state'), str(tmp_path / 'run'))


@pytest.fixture
def make_vm(layout, sim_binary, nl):
    made = []

    def factory(name=NAME, binary=None, **kwargs):
        vm = Vm(layout, name, binary or sim_binary, api_timeout=5, host=HOST, **kwargs)
        made.append(vm)
        return vm
    yield factory
    for vm in made:
        pid = vm.vmm.pid()
        if pid is not None:
            vm.vmm.stop(timeout=0, force=True)
        vm.close()


@pytest.fixture
def kernel(tmp_path):
    path = tmp_path / 'vmlinux'
    path.write_bytes(b'\x7fELF fake kernel for the simulator')
    return str(path)


def make_spec(vm, kernel, networks=(), **params):
    spec = specmod.normalize(dict(name=vm.name, kernel=kernel, networks=list(networks), **params), vm.vm_dir, HOST)
    spec['cloud_init'] = None
    return spec


def net_spec(vm, kernel):
    """One NIC on br0 (a tap the collection makes) and one on the user's tap."""
    return make_spec(vm, kernel, networks=[{'bridge': 'br0'}, {'tap': USER_TAP}])


def bare_config(vm, spec):
    """The spec's VmConfig without its NICs: the simulator opens the taps CH would, and ours are fake."""
    config = vm.build_config(spec)
    config.pop('net', None)
    return config


def write_record(vm, run_state, spec=None, **extra):
    vm.layout.ensure_dirs(vm.name)
    record = vm_record.build(spec=spec, binary=vm.binary, run_state=run_state, **extra)
    vm.write_record(record)
    return vm.record()


def dead_pid():
    proc = subprocess.Popen(['true'])
    proc.wait()
    return proc.pid


def run_files(vm):
    return sorted(p for p in (vm.vmm.socket_path, vm.vmm.pid_file) if os.path.lexists(p))


# --- public_spec and Observed -------------------------------------------------------------------------
@pytest.mark.parametrize('spec, public', [
    (None, {}),
    ({}, {}),
    ({'cpus': 2, 'balloon': None, 'disks': [], 'platform': {}, 'hugepages': False, 'memory_hotplug': 0,
      'serial': 'file', 'networks': [{'id': 'net0'}]},
     {'cpus': 2, 'hugepages': False, 'memory_hotplug': 0, 'serial': 'file', 'networks': [{'id': 'net0'}]}),
])
def test_public_spec(spec, public):
    assert public_spec(spec) == public


@pytest.mark.parametrize('state, live', [
    ('absent', False), ('stopped', False), ('crashed', False), ('created', False), ('standby', False),
    ('running', True), ('paused', True),
])
def test_observed_live(state, live):
    assert Observed(None, None, None, state).live is live


def test_observed_spec_and_predicted():
    record = vm_record.build(spec={'cpus': 2}, run_state='stopped')
    obs = Observed(record, 7, {'state': 'Running', 'config': {'a': 1}, 'memory_actual_size': 5}, 'running')
    assert obs.spec == {'cpus': 2, 'networks': [], 'disks': []}
    assert Observed(None, None, None, 'absent').spec == {}
    paused = obs.predicted('paused', config={'b': 2})
    assert (paused.record, paused.pid, paused.state) == (record, 7, 'paused')
    assert paused.info == {'state': 'Paused', 'config': {'b': 2}, 'memory_actual_size': 5}
    assert obs.info['config'] == {'a': 1}                       # the observation itself is untouched
    other = {'spec': {}}
    assert Observed(None, None, None, 'stopped').predicted('running', record=other).info == {'state': 'Running'}
    assert obs.predicted('running', record=other).record is other


def test_live_states():
    assert LIVE_STATES == {'Running': 'running', 'Paused': 'paused'}


# --- paths and names ----------------------------------------------------------------------------------
def test_paths(layout, make_vm):
    vm = make_vm()
    assert vm.vm_dir == os.path.join(layout.state_dir, 'vms', NAME)
    assert vm.cidata_path() == os.path.join(vm.vm_dir, 'cidata.iso')
    assert vm.managed_list_path() == os.path.join(vm.vm_dir, 'managed.json')
    assert vm.console_sockets() == [os.path.join(layout.run_dir, 'web1.serial.sock'),
                                    os.path.join(layout.run_dir, 'web1.console.sock')]
    assert vm.vmm.socket_path == os.path.join(layout.run_dir, 'web1.sock')
    assert vm.vmm.pid_file == os.path.join(layout.run_dir, 'web1.pid')
    assert vm.vmm.log_file == os.path.join(vm.vm_dir, 'ch.log')
    assert vm.vmm.state_dir == layout.state_dir
    assert vm.vmm.launcher == 'auto'


@pytest.mark.parametrize('name', ['', 'a b', '../x', '-web', 'x' * 49])
def test_a_bad_name_is_refused(layout, name):
    with pytest.raises(OptionError) as info:
        Vm(layout, name, '/bin/true', host=HOST)
    assert info.value.option == 'name'


def test_of_and_sibling(tmp_path):
    vm = Vm.of(str(tmp_path / 's'), str(tmp_path / 'r'), NAME, '/bin/ch', api_timeout=7, host=HOST, launcher='systemd')
    assert (vm.layout.state_dir, vm.layout.run_dir) == (str(tmp_path / 's'), str(tmp_path / 'r'))
    assert vm.vmm.launcher == 'systemd' and vm.api_timeout == 7
    src = vm.sibling('base')
    assert (src.name, src.layout, src.binary, src.api_timeout, src.host) == ('base', vm.layout, '/bin/ch', 7, HOST)
    assert src.sibling('b2', binary='/other/ch').binary == '/other/ch'
    assert src.vmm.launcher == 'auto'            # a sibling is observed and started its own way
    assert Vm(vm.layout, NAME, '/bin/ch', api_timeout=None, launcher=None, host=HOST).api_timeout == 30.0


def test_build_config_adds_the_cidata_disk_only_with_cloud_init(make_vm, kernel):
    vm = make_vm()
    spec = make_spec(vm, kernel)
    assert 'disks' not in vm.build_config(spec)
    spec['cloud_init'] = {'digest': 'd', 'instance_id': 'i', 'hostname': NAME}
    assert vm.build_config(spec)['disks'] == [specmod.cidata_disk_config(vm.cidata_path())]
    assert vm.build_config(spec)['serial'] == {'mode': 'File', 'file': os.path.join(vm.vm_dir, 'serial.log')}


# --- observe without a VMM ------------------------------------------------------------------------------
def test_observe_nothing(make_vm):
    obs = make_vm().observe()
    assert (obs.record, obs.pid, obs.info, obs.state) == (None, None, None, 'absent')


@pytest.mark.parametrize('run_state', ['stopped', None])
def test_observe_a_stopped_vm(make_vm, run_state):
    vm = make_vm()
    record = write_record(vm, run_state)
    obs = vm.observe()
    assert (obs.pid, obs.info, obs.state) == (None, None, 'stopped')
    assert obs.record == record and obs.record['name'] == NAME


# A record that says running or paused without a live VMM: crashed, or stopped when the VMM ended by
# itself (our pid file still there, its API socket removed by CH on a clean exit).
@pytest.mark.parametrize('run_state', ['running', 'paused'])
@pytest.mark.parametrize('pid_file, socket_file, state', [
    (None, False, 'crashed'),             # run_dir emptied (a reboot): nothing tells how it ended
    (None, True, 'crashed'),
    ('dead', True, 'crashed'),            # killed: the socket stays
    ('dead', False, 'stopped'),           # ended by itself
    ('reused', True, 'crashed'),          # the pid is alive but is not this VM's VMM
    ('reused', False, 'stopped'),
])
def test_observe_without_a_live_vmm(make_vm, run_state, pid_file, socket_file, state):
    vm = make_vm()
    write_record(vm, run_state)
    if pid_file:
        with open(vm.vmm.pid_file, 'w') as handle:
            handle.write('%d\n' % (dead_pid() if pid_file == 'dead' else os.getpid()))
    if socket_file:
        open(vm.vmm.socket_path, 'w').close()
    obs = vm.observe()
    assert (obs.pid, obs.info, obs.state) == (None, None, state)
    assert obs.record['run_state'] == run_state


def test_observe_standby(make_vm, layout):
    vm = make_vm()
    write_record(vm, 'standby')
    assert vm.observe().state == 'stopped'                   # no standby state saved: nothing to wake
    standby = os.path.join(vm.vm_dir, 'standby')
    os.mkdir(standby)
    write_json_atomic(os.path.join(standby, 'manifest.json'), {'vm': NAME, 'name': 'standby'})
    obs = vm.observe()
    assert (obs.pid, obs.info, obs.state) == (None, None, 'standby')
    with open(os.path.join(standby, 'manifest.json'), 'w') as handle:
        handle.write('{damaged')
    assert vm.observe().state == 'stopped'


def test_observe_uses_the_record_given(make_vm):
    vm = make_vm()
    given = vm_record.build(run_state='paused')
    obs = vm.observe(record=given)                             # no record on disk; the given one counts
    assert obs.record is given and obs.state == 'crashed'


@pytest.mark.parametrize('recorded, use, launcher', [
    ('systemd', True, 'systemd'),
    ('systemd', False, 'auto'),
    (None, True, 'auto'),
])
def test_observe_takes_the_recorded_launcher_when_asked(make_vm, recorded, use, launcher):
    vm = make_vm()
    write_record(vm, 'stopped', launcher=recorded)
    vm.observe(use_recorded_launcher=use)
    assert vm.vmm.launcher == launcher


# --- observe a live VMM (the simulator) -----------------------------------------------------------------
def test_observe_a_vmm_without_a_vm(make_vm):
    vm = make_vm()
    vm.layout.ensure_dirs(NAME)          # launch() and restore() expect the VM's directory (start() makes it)
    pid = vm.launch()
    obs = vm.observe()
    assert (obs.record, obs.pid, obs.info, obs.state) == (None, pid, None, 'absent')   # an orphan VMM
    write_record(vm, 'running')
    obs = vm.observe()
    assert (obs.pid, obs.info, obs.state) == (pid, None, 'created')
    assert vm.live_state() is None


def test_observe_a_running_then_paused_vm(make_vm, kernel):
    vm = make_vm()
    spec = make_spec(vm, kernel, cpus=2, memory='1G')
    config = bare_config(vm, spec)
    record = write_record(vm, 'running', spec=spec, config=config)
    vm.start(spec, config)
    obs = vm.observe()
    assert obs.state == 'running' and obs.pid == vm.vmm.pid() and obs.record == record
    assert obs.info['state'] == 'Running'
    assert obs.info['config']['cpus']['boot_vcpus'] == 2 and obs.info['config']['memory']['size'] == 1 << 30
    assert obs.info['config']['payload'] == {'kernel': kernel}
    assert vm.live_state() == 'Running'
    vm.client().pause()
    assert vm.observe().state == 'paused' and vm.live_state() == 'Paused'


def test_start_paused(make_vm, kernel):
    vm = make_vm()
    spec = make_spec(vm, kernel)
    vm.start(spec, bare_config(vm, spec), paused=True)
    assert vm.observe(record=vm_record.build(run_state='paused')).state == 'paused'
    assert os.path.isdir(vm.vm_dir)                               # start makes the VM's directory


def test_live_state_without_a_vmm(make_vm):
    assert make_vm().live_state() is None


# --- start, stop, teardown and the taps ----------------------------------------------------------------
def test_start_makes_the_managed_taps_and_stop_removes_only_those(make_vm, kernel, nl):
    vm = make_vm()
    spec = net_spec(vm, kernel)
    managed = spec['networks'][0]['tap']
    assert spec['networks'][0]['managed_tap'] and not spec['networks'][1]['managed_tap']
    links = vm.netlink()
    links.add(USER_TAP)
    links.add(FOREIGN_TAP)
    links.add('br0', kind='bridge')
    vm.start(spec, bare_config(vm, spec))
    assert [c for c in links.calls if c[0] == 'ensure_tap'] == [('ensure_tap', managed, 'br0', False, None)]
    assert links.names() == sorted(['br0', FOREIGN_TAP, USER_TAP, managed])
    pid = vm.vmm.pid()
    assert pid is not None and vm.observe(record=vm_record.build(run_state='running')).state == 'running'
    vm.stop(spec, timeout=5)
    assert vm.vmm.pid() is None and proc_cmdline(pid) is None
    assert run_files(vm) == []
    assert links.names() == sorted(['br0', FOREIGN_TAP, USER_TAP])   # the user's and others' taps stay
    assert [c for c in links.calls if c[0] == 'delete_link'] == [('delete_link', managed)]


def test_stop_with_nothing_running_cleans_the_run_files_and_is_quiet(make_vm, kernel, nl):
    vm = make_vm()
    spec = net_spec(vm, kernel)
    os.makedirs(vm.layout.run_dir)
    open(vm.vmm.socket_path, 'w').close()
    with open(vm.vmm.pid_file, 'w') as handle:
        handle.write('%d\n' % dead_pid())
    vm.stop(spec, timeout=1)
    assert run_files(vm) == []
    assert [c for c in vm.netlink().calls if c[0] == 'delete_link'] == []    # its tap was not there
    vm.stop(None)                                                            # no spec: no taps to look at
    assert run_files(vm) == []


def test_teardown_kills_the_vmm_at_once_and_removes_the_taps(make_vm, kernel, nl):
    vm = make_vm()
    spec = net_spec(vm, kernel)
    vm.start(spec, bare_config(vm, spec))
    pid = vm.vmm.pid()
    vm.teardown(spec)
    assert vm.vmm.pid() is None and proc_cmdline(pid) is None and run_files(vm) == []
    assert vm.netlink().names() == []


def test_a_start_that_fails_leaves_nothing(make_vm, kernel, tmp_path, nl):
    vm = make_vm()
    spec = net_spec(vm, kernel)
    config = dict(bare_config(vm, spec), payload={'kernel': str(tmp_path / 'no-such-kernel')})
    with pytest.raises(ChApiError) as info:
        vm.start(spec, config)
    assert 'vm.boot' in info.value.msg
    assert vm.vmm.pid() is None and run_files(vm) == []
    assert vm.netlink().names() == []                    # the tap it made is gone again


def test_a_launch_that_fails_leaves_no_tap(make_vm, kernel, tmp_path, nl):
    vm = make_vm(binary=str(tmp_path / 'missing-ch'))
    spec = net_spec(vm, kernel)
    with pytest.raises(VmmError) as info:
        vm.start(spec, bare_config(vm, spec))
    assert 'missing or not executable' in info.value.msg
    assert vm.netlink().names() == [] and run_files(vm) == []


def test_a_restore_that_fails_leaves_nothing(make_vm, kernel, tmp_path, nl):
    vm = make_vm()
    spec = net_spec(vm, kernel)
    vm.layout.ensure_dirs(NAME)
    with pytest.raises(ChApiError) as info:
        vm.restore(str(tmp_path / 'no-such-snapshot'), spec)
    assert 'vm.restore' in info.value.msg
    assert vm.vmm.pid() is None and run_files(vm) == []
    assert vm.netlink().names() == []


def test_present_taps(make_vm, nl):
    vm = make_vm()
    assert vm.present_taps([]) == []
    assert FakeNetlink.instances == []                    # no names: netlink is not even opened
    links = vm.netlink()
    links.add('chvb')
    links.add('chva')
    assert vm.present_taps(['chvb', 'chvc', 'chva', 'chvb']) == ['chva', 'chvb']


def test_managed_taps():
    spec = {'networks': [vm_record.nic('chv1', bridge='br0'), vm_record.nic(USER_TAP),
                         vm_record.nic('chv2', bridge='br1', net_id='net2')]}
    assert Vm.managed_taps(spec) == ['chv1', 'chv2']
    assert Vm.managed_taps(None) == [] and Vm.managed_taps({}) == []


def test_ensure_tap_only_for_a_managed_tap(make_vm, nl):
    vm = make_vm()
    vm.ensure_tap(None)
    vm.ensure_tap(vm_record.nic(USER_TAP))
    assert FakeNetlink.instances == []
    vm.ensure_tap(vm_record.nic('chv1', bridge='br0', num_queues=4, mtu=9000))
    assert vm.netlink().calls == [('ensure_tap', 'chv1', 'br0', True, 9000)]


def test_hot_add_and_hot_remove(make_vm, monkeypatch, nl):
    vm = make_vm()
    client = FakeClient()
    monkeypatch.setattr(vm.vmm, 'client', lambda: client)
    net = vm_record.nic('chv1', bridge='br0', net_id='net1')
    vm.hot_add_net({'id': 'net1', 'tap': 'chv1'}, net)
    assert vm.netlink().names() == ['chv1']
    vm.netlink().add(USER_TAP)
    vm.hot_remove('net1', 'chv1')
    vm.hot_remove('net2', USER_TAP)                       # not a tap of the collection: kept
    vm.hot_remove('disk1')
    assert client.calls == [('add_net', 'net1'), ('remove_device', 'net1'), ('remove_device', 'net2'),
                            ('remove_device', 'disk1')]
    assert vm.netlink().names() == [USER_TAP]


def test_close_closes_netlink_once(make_vm, nl):
    vm = make_vm()
    vm.close()                                            # nothing opened: fine
    links = vm.netlink()
    assert vm.netlink() is links and links.entered == 1
    with vm:
        pass
    assert links.exited == 1
    vm.close()
    assert links.exited == 1
    assert vm.netlink() is not links                      # a new one after close


# --- result -----------------------------------------------------------------------------------------------
def result_spec(vm, kernel, tmp_path):
    spec = make_spec(vm, kernel, networks=[{'bridge': 'br0'}, {'bridge': 'br1', 'address': '10.2.0.7'}, {'tap': USER_TAP}],
                     disks=[{'path': str(tmp_path / 'root.raw'), 'size': '1G'}, {'path': str(tmp_path / 'data.raw')}])
    return spec


def test_result_of_a_stopped_vm(make_vm, kernel, tmp_path):
    vm = make_vm()
    spec = result_spec(vm, kernel, tmp_path)
    config = vm.build_config(spec)
    nic0, nic1, nic2 = spec['networks']
    # a lease of the first NIC in its bridge's lease file
    os.makedirs(os.path.join(vm.layout.state_dir, 'dhcp'))
    with open(os.path.join(vm.layout.state_dir, 'dhcp', 'br0.leases'), 'w') as handle:
        handle.write('1700000000 %s 10.1.0.9 web1 *\n1700000000 02:00:00:00:00:99 10.1.0.2 other *\n' % nic0['mac'])
    record = {'spec': spec, 'config': config, 'managed_files': [str(tmp_path / 'root.raw')]}
    assert vm.result('stopped', record) == {
        'name': NAME,
        'state': 'stopped',
        'pid': None,
        'api_socket': None,
        'config': config,
        'live_config': None,
        'memory_actual_size': None,
        'serial_file': os.path.join(vm.vm_dir, 'serial.log'),
        'console_pty': None,
        'log_file': os.path.join(vm.vm_dir, 'ch.log'),
        'networks': [
            {'id': 'net0', 'tap': nic0['tap'], 'mac': nic0['mac'], 'bridge': 'br0', 'address': '10.1.0.9',
             'address_source': 'lease'},
            {'id': 'net1', 'tap': nic1['tap'], 'mac': nic1['mac'], 'bridge': 'br1', 'address': '10.2.0.7',
             'address_source': 'static'},
            {'id': 'net2', 'tap': USER_TAP, 'mac': nic2['mac'], 'bridge': None, 'address': None, 'address_source': None},
        ],
        'disks': [{'id': 'disk0', 'path': str(tmp_path / 'root.raw'), 'managed': True},
                  {'id': 'disk1', 'path': str(tmp_path / 'data.raw'), 'managed': False}],
    }


def test_result_of_a_live_vm(make_vm, kernel, tmp_path):
    vm = make_vm()
    spec = make_spec(vm, kernel, serial='pty', console='pty')
    config = vm.build_config(spec)
    live = dict(config, serial={'mode': 'Pty', 'file': '/dev/pts/7'}, console={'mode': 'Pty', 'file': '/dev/pts/8'})
    info = {'state': 'Running', 'config': live, 'memory_actual_size': 123}
    result = vm.result('running', {'spec': spec, 'config': config}, info, 4242)
    assert (result['pid'], result['api_socket']) == (4242, vm.vmm.socket_path)
    assert result['config'] == config and result['live_config'] == live
    assert result['memory_actual_size'] == 123
    assert result['console_pty'] == '/dev/pts/8'          # the console's pty first, then the serial's
    assert result['serial_file'] is None                  # only for serial: file
    live['console'] = {'mode': 'Off'}
    assert vm.result('running', {'spec': spec}, info, 4242)['console_pty'] == '/dev/pts/7'


def test_result_serial_file_follows_the_live_config(make_vm, kernel):
    vm = make_vm()
    spec = make_spec(vm, kernel)
    config = vm.build_config(spec)
    live = dict(config, serial={'mode': 'File', 'file': '/elsewhere/serial.log'})
    assert vm.result('running', {'spec': spec, 'config': config}, {'config': live}, 1)['serial_file'] == '/elsewhere/serial.log'
    assert vm.result('stopped', {'spec': spec, 'config': config})['serial_file'] == os.path.join(vm.vm_dir, 'serial.log')


def test_result_of_an_absent_vm(make_vm):
    vm = make_vm()
    assert vm.result('absent', None) == {
        'name': NAME, 'state': 'absent', 'pid': None, 'api_socket': None, 'config': None, 'live_config': None,
        'memory_actual_size': None, 'serial_file': None, 'console_pty': None,
        'log_file': os.path.join(vm.vm_dir, 'ch.log'), 'networks': [], 'disks': []}
