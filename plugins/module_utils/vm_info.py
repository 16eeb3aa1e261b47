# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ch_vm_info's engine: every recorded VM of a state_dir (or one), as observed. Reads only.
No Ansible imports here."""

from __future__ import annotations

from ansible_collections.cloudhv.ch.plugins.module_utils.errors import ChApiError, RecordUnreadable, StateError
from ansible_collections.cloudhv.ch.plugins.module_utils.snapshot_store import list_snapshots
from ansible_collections.cloudhv.ch.plugins.module_utils.store import check_name
from ansible_collections.cloudhv.ch.plugins.module_utils.vm import Vm, public_spec


def vm_infos(layout, binary=None, name=None):
    """Every recorded VM (or the one named), with its observed state; a VM whose record cannot be
    read is listed with state ``unknown`` and the error, and the others as usual."""
    names = [check_name(name)] if name else layout.list_vms()
    out = []
    for vm_name in names:
        try:
            record = layout.read_record(vm_name)
        except RecordUnreadable as exc:
            out.append({'name': vm_name, 'state': 'unknown', 'error': str(exc)})
            continue
        if record is None:
            continue
        with Vm(layout, vm_name, record.get('binary') or binary, host='-') as vm:
            try:
                obs = vm.observe(record=record)
            except (StateError, ChApiError) as exc:
                out.append({'name': vm_name, 'state': 'unknown', 'error': str(exc)})
                continue
            state = obs.state if obs.state != 'created' else 'stopped'
            result = vm.result(state, record, obs.info, obs.pid)
        result['spec'] = public_spec(record.get('spec'))
        result['snapshots'] = list_snapshots(layout, vm_name)
        result['api_socket'] = layout.socket_path(vm_name)
        out.append(result)
    return out
