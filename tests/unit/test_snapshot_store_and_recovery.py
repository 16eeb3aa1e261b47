"""Pure logic of the snapshot store (snapshot_store.py) and the crash-marker repairs (recovery.py): versions, option inheritance for clones, snapshot
verification, and the repair of interrupted runs against a table of fake VMM states."""
import json
import os
import stat

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils import recovery
from ansible_collections.cloudhv.ch.plugins.module_utils import snapshot_store as snapmod
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import OptionError, StateError
from ansible_collections.cloudhv.ch.plugins.module_utils.fsutil import sha256_file
from ansible_collections.cloudhv.ch.plugins.module_utils.store import Layout
from ansible_collections.cloudhv.ch.plugins.module_utils.vm import Vm


@pytest.mark.parametrize('text,major', [('53.0.0', 53), ('v53.0', 53), ('52.1', 52), (None, None), ('x', None)])
def test_ch_major(text, major):
    assert snapmod.ch_major(text) == major


def fake_binary(tmp_path, version):
    path = str(tmp_path / ('ch-%s' % version))
    with open(path, 'w') as handle:
        handle.write('#!/bin/sh\necho "cloud-hypervisor v%s"\n' % version)
    os.chmod(path, stat.S_IRWXU)
    return path


def make_snapshot(tmp_path, version='53.0.0'):
    path = tmp_path / 'snap'
    path.mkdir()
    (path / 'config.json').write_text('{"cpus": {}}')
    (path / 'state.json').write_text('{"version": "%s"}' % version)
    with open(str(path / 'memory-ranges'), 'wb') as handle:
        handle.truncate(1 << 20)
    files = {'config.json': {'sha256': sha256_file(str(path / 'config.json'))},
             'state.json': {'sha256': sha256_file(str(path / 'state.json'))},
             'memory-ranges': {'size': 1 << 20}}
    return str(path), {'vm': 'web1', 'name': 's1', 'ch_version': version, 'files': files, 'disks': []}


def test_verify_accepts_a_good_snapshot(tmp_path):
    path, manifest = make_snapshot(tmp_path)
    snapmod.verify(path, manifest, fake_binary(tmp_path, '53.1'))


def test_verify_refuses_another_major_version(tmp_path):
    path, manifest = make_snapshot(tmp_path)
    with pytest.raises(OptionError) as exc:
        snapmod.verify(path, manifest, fake_binary(tmp_path, '54.0'))
    assert exc.value.option == 'binary' and 'major' in exc.value.msg


@pytest.mark.parametrize('damage,fragment', [
    (lambda p: open(os.path.join(p, 'state.json'), 'a').write(' '), 'state.json'),
    (lambda p: os.unlink(os.path.join(p, 'config.json')), 'config.json'),
    (lambda p: os.truncate(os.path.join(p, 'memory-ranges'), 4096), 'memory-ranges'),
])
def test_verify_refuses_damage(tmp_path, damage, fragment):
    path, manifest = make_snapshot(tmp_path)
    damage(path)
    with pytest.raises(StateError) as exc:
        snapmod.verify(path, manifest, fake_binary(tmp_path, '53.0'))
    assert fragment in exc.value.msg


def vm_handle(layout, vmm):
    """A Vm handle on web1 whose VMM is ``vmm``."""
    vm = Vm(layout, 'web1', '/bin/true', host='-')
    vm.vmm = vmm
    return vm


class FakeClient(object):
    def __init__(self, vmm):
        self.vmm = vmm

    def info(self):
        return {'state': self.vmm.state}

    def resume(self):
        self.vmm.calls.append('resume')
        self.vmm.state = 'Running'


class FakeVmm(object):
    """A VMM that is gone (state None) or holds a VM in ``state``."""

    def __init__(self, state):
        self.state = state
        self.calls = []

    def pid(self):
        return 4242 if self.state else None

    def client(self):
        return FakeClient(self)

    def stop(self, **_kw):
        self.calls.append('stop')
        self.state = None


@pytest.mark.parametrize('op,was_running,state,check_mode,resumed,calls', [
    ('snapshot', True, 'Paused', False, True, ['resume']),
    ('snapshot', True, 'Paused', True, True, []),          # check mode predicts, does nothing
    ('snapshot', False, 'Paused', False, False, []),       # it was paused before: stays paused
    ('snapshot', True, 'Running', False, False, []),       # already resumed
    ('snapshot', True, None, False, False, []),            # the VMM is gone: nothing to resume
])
def test_repair_of_an_interrupted_snapshot(tmp_path, op, was_running, state, check_mode, resumed, calls):
    layout = Layout(str(tmp_path / 'state'), str(tmp_path / 'run'))
    layout.ensure_dirs('web1')
    partial = str(tmp_path / '.s1.partial')
    os.mkdir(partial)
    recovery.write_marker(vm_handle(layout, None), {'op': op, 'tmp': partial, 'dest': str(tmp_path / 's1'),
                          'was_running': was_running})
    vmm = FakeVmm(state)
    changes, did_resume = recovery.repair(vm_handle(layout, vmm), check_mode=check_mode)
    assert did_resume is resumed and vmm.calls == calls
    assert any('partial snapshot' in c for c in changes)
    assert os.path.exists(partial) is check_mode
    assert (recovery.read_marker(vm_handle(layout, vmm)) is not None) is check_mode


@pytest.mark.parametrize('check_mode', [False, True])
def test_recover_undoes_a_partial_clone_for_a_run_that_creates_the_vm_otherwise(tmp_path, check_mode):
    """A clone killed before its record, then a run that creates the VM without clone_from: the
    half-made copy and clone-source go (in check mode: are predicted to), so the marker is not taken
    for a clone to finish once the VM has a record."""
    from ansible_collections.cloudhv.ch.plugins.module_utils.vm import Observed
    layout = Layout(str(tmp_path / 'state'), str(tmp_path / 'run'))
    layout.ensure_dirs('web1')
    vm = vm_handle(layout, FakeVmm(None))
    half = os.path.join(vm.vm_dir, 'root.raw')
    work = os.path.join(vm.vm_dir, snapmod.CLONE_SOURCE)
    os.mkdir(work)
    open(half, 'w').close()
    recovery.write_marker(vm, {'op': 'clone', 'files': [half], 'work': work})
    obs = Observed(None, None, None, 'absent')
    changes, after = recovery.recover(vm, obs, check_mode=check_mode)
    assert changes == ['remove what an interrupted clone left in %s' % vm.vm_dir]
    assert after is obs
    assert os.path.exists(half) is check_mode and os.path.exists(work) is check_mode
    assert (recovery.read_marker(vm) is not None) is check_mode
    if check_mode:   # a clone_from run leaves it to clone.Clone.run, which undoes it itself
        assert recovery.recover(vm, obs, cloning=True) == ([], obs)
        assert os.path.exists(half)


def test_repair_of_an_interrupted_restore_puts_disks_back(tmp_path):
    layout = Layout(str(tmp_path / 'state'), str(tmp_path / 'run'))
    layout.ensure_dirs('web1')
    disk = str(tmp_path / 'root.raw')
    backup = str(tmp_path / '.root.raw.pre-restore')
    prepared = str(tmp_path / '.root.raw.restore')
    for path, text in ((disk, 'snapshot content'), (backup, 'old content'), (prepared, 'x')):
        with open(path, 'w') as handle:
            handle.write(text)
    recovery.write_marker(vm_handle(layout, None), {'op': 'restore', 'backups': [[disk, backup]],
                          'prepared': [[prepared, disk]]})
    vmm = FakeVmm('Created')      # a bare VMM whose vm.restore never happened
    changes, _resumed = recovery.repair(vm_handle(layout, vmm))
    assert 'undo' in changes[0] and vmm.calls == ['stop']
    with open(disk) as handle:
        assert handle.read() == 'old content'
    assert not os.path.exists(backup) and not os.path.exists(prepared)


def test_repair_after_a_finished_restore_drops_the_old_disks(tmp_path):
    layout = Layout(str(tmp_path / 'state'), str(tmp_path / 'run'))
    layout.ensure_dirs('web1')
    disk = str(tmp_path / 'root.raw')
    backup = str(tmp_path / '.root.raw.pre-restore')
    for path in (disk, backup):
        open(path, 'w').close()
    recovery.write_marker(vm_handle(layout, None), {'op': 'restore', 'backups': [[disk, backup]], 'prepared': []})
    vmm = FakeVmm('Running')
    changes, _resumed = recovery.repair(vm_handle(layout, vmm))
    assert 'finish' in changes[0] and vmm.calls == []
    assert os.path.exists(disk) and not os.path.exists(backup)


def test_list_snapshots_reads_registry_and_default_dir(tmp_path):
    layout = Layout(str(tmp_path / 'state'), str(tmp_path / 'run'))
    layout.ensure_dirs('web1')
    default = os.path.join(layout.snapshots_dir('web1'), 'a')
    elsewhere = str(tmp_path / 'b')
    for path, name in ((default, 'a'), (elsewhere, 'b')):
        os.makedirs(path)
        with open(os.path.join(path, 'manifest.json'), 'w') as handle:
            json.dump({'vm': 'web1', 'name': name, 'created': 'now', 'ch_version': '53.0.0',
                       'includes_disks': True}, handle)
    os.makedirs(os.path.join(layout.snapshots_dir('web1'), '.c.partial'))
    snapmod.write_registry(layout, 'web1', {'b': elsewhere, 'gone': str(tmp_path / 'gone')})
    listed = snapmod.list_snapshots(layout, 'web1')
    assert [(s['name'], s['path']) for s in listed] == [('a', default), ('b', elsewhere)]
