# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Standby: a VM's memory and device state saved in its own directory and its VMM stopped
(ch_vm state=standby), and the wake-up that restores it into a new VMM.

Its disks are not copied: once the VMM is gone nothing writes them, and their size, mtime and
inode are recorded so that waking refuses disks that changed meanwhile. No Ansible imports here;
the caller holds the VM's lock.
"""

from __future__ import annotations

import os

from ansible_collections.cloudhv.ch.plugins.module_utils import recovery
from ansible_collections.cloudhv.ch.plugins.module_utils import snapshot_ops
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import CloudHVError, StateError
from ansible_collections.cloudhv.ch.plugins.module_utils.fsutil import rmtree_quiet
from ansible_collections.cloudhv.ch.plugins.module_utils.snapshot_store import (
    STANDBY,
    read_manifest,
    standby_manifest,
    standby_path,
    verify,
)
from ansible_collections.cloudhv.ch.plugins.module_utils.store import read_json, write_json_atomic

STANDBY_DISKS = 'disks-at-standby.json'


def path(vm):
    return standby_path(vm.layout, vm.name)


def _disk_fingerprints(spec):
    """(path, size, mtime_ns, inode) of the VM's writable disks: what must not change while the
    VM is in standby (its memory holds their page cache and filesystem state)."""
    out = []
    for disk in spec.get('disks') or []:
        if disk.get('readonly'):
            continue
        try:
            st = os.stat(disk['path'])
            out.append([disk['path'], st.st_size, st.st_mtime_ns, st.st_ino])
        except OSError:
            out.append([disk['path'], None, None, None])
    return out


def check_wake(vm, spec, binary):
    """Refuse to wake a VM whose standby state CH cannot restore, or whose writable disks changed
    (or went) since it went into standby: its restored memory would not match them."""
    verify(path(vm), standby_manifest(vm.layout, vm.name) or {}, binary, option='state')
    recorded = read_json(os.path.join(path(vm), STANDBY_DISKS))
    if not isinstance(recorded, list):
        return       # a standby taken before this check existed
    now = dict((f[0], f) for f in _disk_fingerprints(spec))
    changed = [f[0] for f in recorded if now.get(f[0]) != f]
    if changed:
        raise StateError("%s changed since %s went into standby: its saved memory no longer matches "
                         "its disks, so it cannot be resumed from there (state=stopped discards the "
                         "standby state, then state=running boots it afresh)" % (', '.join(changed), vm.name),
                         option='state')


def saved_config(vm):
    """The VmConfig the standby state holds (what the VM runs once woken)."""
    return read_json(os.path.join(path(vm), 'config.json'))


def go(vm, spec, record, run_state, stop_timeout=30.0, force=False):
    """Snapshot the live VM into its standby directory, then stop the VMM and remove its taps.
    On failure the VM keeps running (or paused) and the record is put back."""
    dest = path(vm)
    rmtree_quiet(dest)
    try:
        snapshot_ops.take(vm, record, dest, name=STANDBY, include_disks=False, op='standby',
                          keep_paused=True, extra_marker={'run_state': run_state})
    except CloudHVError:
        vm.write_record(dict(vm.record() or record, run_state=run_state))
        raise
    vm.stop(spec, timeout=stop_timeout, force=force)
    write_json_atomic(os.path.join(dest, STANDBY_DISKS), _disk_fingerprints(spec))
    recovery.clear_marker(vm)


def wake(vm, paused=False):
    """Restore the VM from its standby state into a new VMM, then drop the state. On failure the
    VMM is stopped again and the VM stays in standby."""
    manifest = read_manifest(path(vm)) or {}
    spec = (manifest.get('record') or {}).get('spec') or (vm.record() or {}).get('spec') or {}
    vm.restore(path(vm), spec, resume=not paused)
    rmtree_quiet(path(vm))


def discard(vm):
    rmtree_quiet(path(vm))
