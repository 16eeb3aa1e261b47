# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Boot-time start of a VM through a systemd unit (ch_vm's ``autostart``).

The unit recreates the VM's taps, starts CH bare, then creates and boots the VM from the stored
``vmconfig.json`` with ``ch-remote``. Plain Python, no Ansible imports; systemctl and the unit
directory are parameters so the logic is testable without systemd.
"""


import json
import os
import shlex
import subprocess

from ansible_collections.cloudhv.ch.plugins.module_utils.errors import HostError
from ansible_collections.cloudhv.ch.plugins.module_utils.store import read_text, state_dir_tag, write_json_atomic

UNIT_DIR = '/etc/systemd/system'


def pid1_name():
    try:
        with open('/proc/1/comm') as handle:
            return handle.read().strip() or 'an unknown init'
    except (IOError, OSError):
        return 'an unknown init'


def unit_name(vm, vm_dir):
    """``cloudhv-vm-<name>.<tag>.service``: the tag (``store.state_dir_tag``, 8 hex digits) is that of
    the VM's state_dir (``vm_dir`` is ``<state_dir>/vms/<name>``), so that VMs of the same name in two
    state_dirs have units of their own. A dot separates it because VM names never hold one, and
    ``cloudhv-vm-`` differs from the ``cloudhv-vmm-`` of the VMM's transient unit (vmm.unit_name)
    wherever a VM name starts: a VM named ``vmm-web1`` and one named ``web1`` cannot share a unit name.
    At most 11 + 48 + 9 + 8 = 76 characters (systemd allows 255), all from [A-Za-z0-9_.-]."""
    return 'cloudhv-vm-%s.%s.service' % (vm, state_dir_tag(os.path.dirname(os.path.dirname(vm_dir))))


def legacy_unit_name(vm):
    """The unit name of releases before the state_dir tag: the same for a VM of this name in every state_dir."""
    return 'cloudhv-%s.service' % vm


def boots_vmconfig(text, vmconfig):
    """Is ``text`` a unit written by this collection that boots the VM of ``vmconfig`` (its
    ``ch-remote ... create <vmconfig>`` line names that file)?"""
    if not text or not text.startswith('# Managed by cloudhv.ch (ch_vm autostart)'):
        return False
    want = os.path.realpath(vmconfig)
    for line in text.splitlines():
        if not line.startswith('ExecStartPost='):
            continue
        try:
            words = shlex.split(line[len('ExecStartPost='):])
        except ValueError:
            continue
        if len(words) >= 2 and words[-2] == 'create' and os.path.realpath(words[-1]) == want:
            return True
    return False


def _legacy_changes(vm, vmconfig, unit_dir, systemctl, check_mode):
    """Remove (disable and delete) the unit an earlier release wrote for this VM under the untagged
    name, but only when it is this VM's: a VM of the same name in another state_dir may own it.
    Returns the changes; the caller reloads systemd."""
    path = os.path.join(unit_dir, legacy_unit_name(vm))
    if not boots_vmconfig(read_text(path), vmconfig):
        return []
    if not check_mode:
        _systemctl(systemctl, 'disable', legacy_unit_name(vm))
        os.unlink(path)
    return ['remove the autostart unit %s of an earlier release (the unit name now carries the state_dir '
            'tag)' % path]


def _q(*args):
    return ' '.join(shlex.quote(a) for a in args)


def render_unit(vm, binary, ch_remote, socket_path, vmconfig, taps, stop_timeout=30):
    """The unit text. ``taps``: [{'tap', 'bridge', 'multi_queue'}] for the VM's managed taps."""
    lines = [
        '# Managed by cloudhv.ch (ch_vm autostart); changes are overwritten.',
        '[Unit]',
        'Description=Cloud Hypervisor VM %s (cloudhv.ch)' % vm,
        'After=network-online.target',
        'Wants=network-online.target',
        '',
        '[Service]',
        'Type=simple',
        # what the VMM creates (sockets, serial log, snapshot files) is its owner's only, as with
        # a launch by ch_vm (vmm.VMM_UMASK)
        'UMask=0177',
        # a stale socket from an unclean shutdown would make CH <= v52 fail at start
        'ExecStartPre=/bin/rm -f %s' % shlex.quote(socket_path),
    ]
    for tap in taps:
        mode = ['ip', 'tuntap', 'add', 'dev', tap['tap'], 'mode', 'tap', 'vnet_hdr']
        if tap.get('multi_queue'):
            mode.append('multi_queue')
        lines.append('ExecStartPre=-/sbin/%s' % _q(*mode))
        lines.append('ExecStartPre=/sbin/%s' % _q('ip', 'link', 'set', tap['tap'], 'master', tap['bridge'], 'up'))
    lines += [
        'ExecStart=%s' % _q(binary, '--api-socket', 'path=%s' % socket_path),
        "ExecStartPost=/bin/sh -c %s" % shlex.quote(
            'i=0; while [ ! -S %s ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done'
            % shlex.quote(socket_path)),
        'ExecStartPost=%s' % _q(ch_remote, '--api-socket', socket_path, 'create', vmconfig),
        'ExecStartPost=%s' % _q(ch_remote, '--api-socket', socket_path, 'boot'),
        'ExecStop=-%s' % _q(ch_remote, '--api-socket', socket_path, 'power-button'),
        'TimeoutStopSec=%d' % max(1, int(stop_timeout)),
    ]
    for tap in taps:
        lines.append('ExecStopPost=-/sbin/%s' % _q('ip', 'link', 'del', tap['tap']))
    lines += ['ExecStopPost=/bin/rm -f %s' % shlex.quote(socket_path), '',
              '[Install]', 'WantedBy=multi-user.target', '']
    return '\n'.join(lines)


def _systemctl(systemctl, *args):
    proc = subprocess.run([systemctl] + list(args), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HostError('autostart: systemctl %s failed: %s' % (' '.join(args), (proc.stderr or proc.stdout).strip()),
                        option='autostart')
    return proc.stdout.strip()


def converge(vm, enabled, vm_dir, config=None, unit_args=None, check_mode=False,
             unit_dir=UNIT_DIR, systemctl='systemctl', require_pid1=True):
    """Make the unit present and enabled (``enabled``) or absent. Returns the list of changes.

    ``unit_args`` are render_unit's keyword arguments except ``vm`` and ``vmconfig``."""
    unit = unit_name(vm, vm_dir)
    unit_path = os.path.join(unit_dir, unit)
    vmconfig = os.path.join(vm_dir, 'vmconfig.json')
    if not enabled:
        changes = _legacy_changes(vm, vmconfig, unit_dir, systemctl, check_mode)
        if os.path.exists(unit_path):
            changes.append('remove the autostart unit %s' % unit_path)
            if not check_mode:
                _systemctl(systemctl, 'disable', unit)
                os.unlink(unit_path)
        if changes and not check_mode:
            if os.path.exists(vmconfig):
                os.unlink(vmconfig)
            _systemctl(systemctl, 'daemon-reload')
        return changes
    if require_pid1 and pid1_name() != 'systemd':
        raise HostError("autostart: needs systemd as PID 1, and this host runs %s; set autostart: false"
                        % pid1_name(), option='autostart')
    text = render_unit(vm, vmconfig=vmconfig, **unit_args)
    config_text = json.dumps(config, indent=2, sort_keys=True) + '\n'
    changes = _legacy_changes(vm, vmconfig, unit_dir, systemctl, check_mode)
    reload_needed = bool(changes)
    if read_text(vmconfig) != config_text:
        changes.append('store the boot-time VM config %s' % vmconfig)
        if not check_mode:
            write_json_atomic(vmconfig, config)
    if read_text(unit_path) != text:
        changes.append('write the autostart unit %s' % unit_path)
        if not check_mode:
            tmp = unit_path + '.tmp'
            with open(tmp, 'w') as handle:
                handle.write(text)
            os.rename(tmp, unit_path)
        reload_needed = True
    if reload_needed and not check_mode:
        _systemctl(systemctl, 'daemon-reload')
    enabled_now = subprocess.run([systemctl, 'is-enabled', unit], capture_output=True,
                                 text=True, check=False).stdout.strip() == 'enabled'
    if not enabled_now:
        changes.append('enable %s' % unit)
        if not check_mode:
            _systemctl(systemctl, 'enable', unit)
    return changes
