"""ch_vm autostart: unit rendering and the enable/disable logic, with a fake systemctl."""
import os
import re
import stat

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils import autostart, vmm
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import HostError
from ansible_collections.cloudhv.ch.plugins.module_utils.store import state_dir_tag
from ansible_collections.cloudhv.ch.plugins.module_utils.vmm import VMM_UMASK

ARGS = {'binary': '/usr/local/bin/cloud-hypervisor', 'ch_remote': '/usr/local/bin/ch-remote',
        'socket_path': '/run/cloudhv/web1.sock', 'stop_timeout': 45,
        'taps': [{'tap': 'chv0123456789ab', 'bridge': 'br-vms', 'multi_queue': False},
                 {'tap': 'chvba9876543210', 'bridge': 'br-vms', 'multi_queue': True}]}


def test_render_unit_recreates_taps_and_boots_from_vmconfig():
    text = autostart.render_unit('web1', vmconfig='/var/lib/cloudhv/vms/web1/vmconfig.json', **ARGS)
    lines = text.splitlines()
    assert 'ExecStartPre=-/sbin/ip tuntap add dev chv0123456789ab mode tap vnet_hdr' in lines
    assert 'ExecStartPre=-/sbin/ip tuntap add dev chvba9876543210 mode tap vnet_hdr multi_queue' in lines
    assert 'ExecStartPre=/sbin/ip link set chv0123456789ab master br-vms up' in lines
    assert 'ExecStart=/usr/local/bin/cloud-hypervisor --api-socket path=/run/cloudhv/web1.sock' in lines
    create = [i for i, line in enumerate(lines) if ' create ' in line]
    boot = [i for i, line in enumerate(lines) if line.endswith(' boot')]
    assert create and boot and create[0] < boot[0]
    assert 'create /var/lib/cloudhv/vms/web1/vmconfig.json' in lines[create[0]]
    assert 'TimeoutStopSec=45' in lines
    assert 'ExecStopPost=-/sbin/ip link del chvba9876543210' in lines
    assert 'WantedBy=multi-user.target' in lines
    assert 'UMask=%04o' % VMM_UMASK in lines          # the same as a launch by ch_vm


def dirs(tmp_path):
    """(the unit directory, web1's VM directory under tmp_path/state), both made."""
    unit_dir = tmp_path / 'units'
    unit_dir.mkdir()
    vm_dir = tmp_path / 'state' / 'vms' / 'web1'
    vm_dir.mkdir(parents=True)
    return unit_dir, vm_dir


@pytest.fixture
def fake_systemctl(tmp_path):
    calls = tmp_path / 'calls'
    enabled = tmp_path / 'enabled'
    script = tmp_path / 'systemctl'
    script.write_text('#!/bin/sh\necho "$@" >> %s\n'
                      'if [ "$1" = is-enabled ]; then if [ -e %s ]; then echo enabled; else echo disabled; exit 1; fi; fi\n'
                      'if [ "$1" = enable ]; then touch %s; fi\n'
                      'if [ "$1" = disable ]; then rm -f %s; fi\n' % (calls, enabled, enabled, enabled))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script), calls


def test_enable_is_idempotent_and_check_mode_changes_nothing(tmp_path, fake_systemctl):
    systemctl, calls = fake_systemctl
    unit_dir, vm_dir = dirs(tmp_path)
    unit = 'cloudhv-vm-web1.%s.service' % state_dir_tag(str(tmp_path / 'state'))
    assert autostart.unit_name('web1', str(vm_dir)) == unit
    kw = dict(config={'payload': {'kernel': '/k'}}, unit_args=ARGS, unit_dir=str(unit_dir),
              systemctl=systemctl, require_pid1=False)
    pred = autostart.converge('web1', True, str(vm_dir), check_mode=True, **kw)
    assert len(pred) == 3 and not list(unit_dir.iterdir()) and not (vm_dir / 'vmconfig.json').exists()
    done = autostart.converge('web1', True, str(vm_dir), **kw)
    assert done == pred
    assert (unit_dir / unit).exists() and (vm_dir / 'vmconfig.json').exists()
    assert 'enable %s' % unit in calls.read_text()
    assert autostart.converge('web1', True, str(vm_dir), **kw) == []
    kw['config'] = {'payload': {'kernel': '/k2'}}
    assert autostart.converge('web1', True, str(vm_dir), **kw) == [
        'store the boot-time VM config %s' % (vm_dir / 'vmconfig.json')]
    removed = autostart.converge('web1', False, str(vm_dir), **kw)
    assert removed and not (unit_dir / unit).exists() and not (vm_dir / 'vmconfig.json').exists()
    assert 'disable %s' % unit in calls.read_text()
    assert autostart.converge('web1', False, str(vm_dir), **kw) == []


UNIT_RE = re.compile(r'^[A-Za-z0-9:_.\\-]{1,247}\.service$')


def test_unit_names_differ_between_state_dirs(tmp_path):
    """Two state_dirs with a VM of the same name on one host: each VM has a unit of its own (the
    name came from the VM name alone, so the second VM's autostart overwrote the first's unit)."""
    one = autostart.unit_name('web1', str(tmp_path / 'a' / 'vms' / 'web1'))
    two = autostart.unit_name('web1', str(tmp_path / 'b' / 'vms' / 'web1'))
    assert one != two
    for unit in (one, two):
        assert UNIT_RE.match(unit) and unit.startswith('cloudhv-vm-web1.'), unit     # readable: the VM's name
    longest = autostart.unit_name('w' * 48, '/var/lib/cloudhv/vms/' + 'w' * 48)
    assert UNIT_RE.match(longest) and len(longest) == 76
    # the same state_dir however it is spelled (a symlink, a trailing slash): the same unit
    (tmp_path / 'a').mkdir()
    os.symlink(str(tmp_path / 'a'), str(tmp_path / 'link'))
    assert autostart.unit_name('web1', str(tmp_path / 'link' / 'vms' / 'web1')) == one
    assert autostart.unit_name('web1', str(tmp_path / 'a') + '/vms/web1') == one
    # no VM name gives another VM's unit, nor the VMM unit of another VM (cloudhv-vmm-<name>...)
    assert autostart.unit_name('vmm-web1', '/s/vms/vmm-web1') != vmm.unit_name('/run/web1.sock', '/s')


def _legacy_unit(unit_dir, vm_dir, vm='web1'):
    """The unit an earlier release wrote for the VM of vm_dir: cloudhv-<name>.service."""
    path = unit_dir / ('cloudhv-%s.service' % vm)
    path.write_text(autostart.render_unit(vm, vmconfig=os.path.join(str(vm_dir), 'vmconfig.json'), **ARGS))
    return path


@pytest.mark.parametrize('enabled', [True, False])
def test_the_unit_of_an_earlier_release_is_replaced(tmp_path, fake_systemctl, enabled):
    """The unit an earlier release wrote for this VM (its ExecStartPost creates the VM from this
    vm_dir's vmconfig.json) is disabled and removed, not left to boot the VM a second time."""
    systemctl, calls = fake_systemctl
    unit_dir, vm_dir = dirs(tmp_path)
    legacy = _legacy_unit(unit_dir, vm_dir)
    kw = dict(config={'payload': {'kernel': '/k'}}, unit_args=ARGS, unit_dir=str(unit_dir),
              systemctl=systemctl, require_pid1=False)
    pred = autostart.converge('web1', enabled, str(vm_dir), check_mode=True, **kw)
    assert pred[0] == ('remove the autostart unit %s of an earlier release (the unit name now carries the '
                       'state_dir tag)' % legacy)
    assert legacy.exists()
    assert not [c for c in (calls.read_text().splitlines() if calls.exists() else []) if not c.startswith('is-enabled')]
    assert autostart.converge('web1', enabled, str(vm_dir), **kw) == pred
    assert not legacy.exists()
    assert 'disable cloudhv-web1.service' in calls.read_text().splitlines()
    assert (unit_dir / autostart.unit_name('web1', str(vm_dir))).exists() is enabled
    assert autostart.converge('web1', enabled, str(vm_dir), **kw) == []


def test_an_earlier_release_unit_of_another_state_dir_is_left_alone(tmp_path, fake_systemctl):
    """cloudhv-web1.service that boots web1 of another state_dir is that VM's: not touched."""
    systemctl, calls = fake_systemctl
    unit_dir, vm_dir = dirs(tmp_path)
    legacy = _legacy_unit(unit_dir, tmp_path / 'other' / 'vms' / 'web1')
    text = legacy.read_text()
    kw = dict(config={'payload': {'kernel': '/k'}}, unit_args=ARGS, unit_dir=str(unit_dir),
              systemctl=systemctl, require_pid1=False)
    done = autostart.converge('web1', True, str(vm_dir), **kw)
    assert len(done) == 3 and not any('earlier release' in c for c in done)
    assert autostart.converge('web1', False, str(vm_dir), **kw)
    assert legacy.read_text() == text and 'cloudhv-web1.service' not in calls.read_text()
    # nor a hand-written unit of that name
    legacy.write_text(text.replace('# Managed by cloudhv.ch', '# mine'))
    assert autostart.converge('web1', False, str(vm_dir), **kw) == [] and legacy.exists()


def test_refuses_without_systemd_as_pid1(tmp_path, monkeypatch):
    monkeypatch.setattr(autostart, 'pid1_name', lambda: 'tini')
    with pytest.raises(HostError) as err:
        autostart.converge('web1', True, str(tmp_path), config={}, unit_args=ARGS, unit_dir=str(tmp_path))
    assert 'autostart' in err.value.msg and 'tini' in err.value.msg
    assert os.listdir(str(tmp_path)) == []
