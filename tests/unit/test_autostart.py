"""ch_vm autostart: unit rendering and the enable/disable logic, with a fake systemctl."""
import os
import stat

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils import autostart
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import HostError
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
    unit_dir = tmp_path / 'units'
    unit_dir.mkdir()
    vm_dir = tmp_path / 'vm'
    vm_dir.mkdir()
    kw = dict(config={'payload': {'kernel': '/k'}}, unit_args=ARGS, unit_dir=str(unit_dir),
              systemctl=systemctl, require_pid1=False)
    pred = autostart.converge('web1', True, str(vm_dir), check_mode=True, **kw)
    assert len(pred) == 3 and not list(unit_dir.iterdir()) and not (vm_dir / 'vmconfig.json').exists()
    done = autostart.converge('web1', True, str(vm_dir), **kw)
    assert done == pred
    assert (unit_dir / 'cloudhv-web1.service').exists() and (vm_dir / 'vmconfig.json').exists()
    assert 'enable cloudhv-web1.service' in calls.read_text()
    assert autostart.converge('web1', True, str(vm_dir), **kw) == []
    kw['config'] = {'payload': {'kernel': '/k2'}}
    assert autostart.converge('web1', True, str(vm_dir), **kw) == [
        'store the boot-time VM config %s' % (vm_dir / 'vmconfig.json')]
    removed = autostart.converge('web1', False, str(vm_dir), **kw)
    assert removed and not (unit_dir / 'cloudhv-web1.service').exists()
    assert 'disable cloudhv-web1.service' in calls.read_text()
    assert autostart.converge('web1', False, str(vm_dir), **kw) == []


def test_refuses_without_systemd_as_pid1(tmp_path, monkeypatch):
    monkeypatch.setattr(autostart, 'pid1_name', lambda: 'tini')
    with pytest.raises(HostError) as err:
        autostart.converge('web1', True, str(tmp_path), config={}, unit_args=ARGS, unit_dir=str(tmp_path))
    assert 'autostart' in err.value.msg and 'tini' in err.value.msg
    assert os.listdir(str(tmp_path)) == []
