# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The crash-marker protocol: every repair, finish and undo of an operation a killed run left.

Before an operation that must not be left half-done (pausing a VM for a snapshot, swapping its
disks for a restore, standby, creating a clone), its writer puts a marker
``<vm_dir>/.snapshot-in-progress.json`` saying what it is about to do (``op``: snapshot,
restore, standby or clone, with the paths involved). The marker goes when the operation is over.

A run that finds a marker (ch_vm or ch_snapshot, holding the VM's lock) repairs before it plans:
- snapshot: a VM left paused is resumed, the partial directory removed;
- restore: if the new VMM runs the VM, the old disks kept aside are dropped; otherwise they are
  put back and the VM is stopped;
- standby: a complete standby state is kept (the VM is in standby); a partial one is removed and
  the record's run state put back;
- clone: a clone killed before it wrote its record is undone (its files are half-made copies,
  never user data) and made again; one killed after is finished (the restore redone from
  ``clone-source``), never cold-booted.

``recover`` is the first phase of every ch_vm run: it returns the changes and the observation
the rest of the run plans from (in check mode, the predicted one). No Ansible imports here.
"""

from __future__ import annotations

import os
import time

from ansible_collections.cloudhv.ch.plugins.module_utils.fsutil import rmtree_quiet, unlink_quiet
from ansible_collections.cloudhv.ch.plugins.module_utils.store import read_json, write_json_atomic

MARKER = '.snapshot-in-progress.json'


def snapshot_store():
    """The snapshot store, loaded only by a run that repairs (a no-change run checks the marker only)."""
    from ansible_collections.cloudhv.ch.plugins.module_utils import snapshot_store as store
    return store


# -- the marker -------------------------------------------------------------------------------------
def marker_path(vm):
    return os.path.join(vm.vm_dir, MARKER)


def write_marker(vm, data):
    data = dict(data, vm=vm.name, pid=os.getpid(), started=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()))
    write_json_atomic(marker_path(vm), data)


def read_marker(vm):
    data = read_json(marker_path(vm))
    return data if isinstance(data, dict) else None


def clear_marker(vm):
    unlink_quiet(marker_path(vm))


# -- the first phase of a ch_vm run -----------------------------------------------------------------
def recover(vm, obs, check_mode=False, cloning=False):
    """Repair what a killed run left for ``vm`` (observed as ``obs``). Returns ``(changes, obs)``:
    the observation to plan from - observed again after a real repair, predicted in check mode.
    ``cloning``: this run creates the VM with clone_from (clone.Clone.run undoes a partial clone)."""
    marker = read_marker(vm)
    if not marker:
        return [], obs
    if obs.record is None:
        # A clone killed before it wrote its record. A run that creates the VM otherwise undoes it
        # now: left there, its marker would later be taken for a clone to finish.
        if cloning or marker.get('op') != 'clone':
            return [], obs
        if not check_mode:
            undo_partial_clone(vm)
        return ['remove what an interrupted clone left in %s' % vm.vm_dir], obs
    if marker.get('op') == 'clone':
        changes, live = finish_clone(vm, marker, obs.record.get('run_state') or 'running', check_mode=check_mode)
        if not check_mode:
            return changes, vm.observe()
        return changes, obs.predicted(live, config=obs.record.get('config'))
    changes, resumed = repair(vm, check_mode=check_mode)
    if not check_mode:
        return changes, vm.observe()
    if resumed and obs.state == 'paused':
        return changes, obs.predicted('running')
    return changes, obs


def for_removal(vm, check_mode=False):
    """What a run that removes the VM does with a marker: an interrupted clone without a record is
    undone, one with a record is not finished (the VM is going), anything else is repaired as
    usual. Returns the changes (predicted in check mode)."""
    marker = read_marker(vm)
    if marker is None:
        return []
    if marker.get('op') != 'clone':
        return repair(vm, check_mode=check_mode)[0]
    if partial_clone(vm):
        if not check_mode:
            undo_partial_clone(vm)
        return ['remove what an interrupted clone left in %s' % vm.vm_dir]
    if not check_mode:
        clear_marker(vm)
    return []


# -- snapshot, restore, standby ----------------------------------------------------------------------
def repair(vm, check_mode=False):
    """Finish or undo an interrupted snapshot, restore or standby (clones: see finish_clone).

    The caller holds the VM's lock. Returns ``(changes, resumed)``: the repairs done (predicted
    in check mode) and whether the VM was (or would be) resumed."""
    marker = read_marker(vm)
    if marker is None or marker.get('op') == 'clone':
        return [], False
    changes = []
    resumed = False
    op = marker.get('op')
    state = vm.live_state()
    if op == 'restore':
        changes.extend(_repair_restore(vm, marker, state, check_mode))
    else:
        dest = marker.get('dest')
        if op == 'standby' and state is None and dest and snapshot_store().read_manifest(dest):
            changes.append('finish an interrupted standby')
        elif op == 'standby' and dest and os.path.lexists(dest):
            changes.append('undo an interrupted standby: remove %s' % dest)
            if not check_mode:
                rmtree_quiet(dest)
                record = vm.record()
                if record and record.get('run_state') == 'standby':
                    vm.write_record(dict(record, run_state=marker.get('run_state') or 'running'))
        if state == 'Paused' and marker.get('was_running'):
            changes.append('resume the VM left paused by an interrupted snapshot')
            resumed = True
            if not check_mode:
                vm.client().resume()
        tmp = marker.get('tmp')
        if tmp and os.path.lexists(tmp):
            changes.append('remove the partial snapshot %s' % tmp)
            if not check_mode:
                rmtree_quiet(tmp)
    if not check_mode:
        clear_marker(vm)
    return changes or ['remove a stale snapshot marker'], resumed


def _repair_restore(vm, marker, state, check_mode):
    if state in ('Running', 'Paused'):
        change = 'finish an interrupted restore: remove the old disks kept aside'
        if not check_mode:
            for _dest, backup in marker.get('backups') or []:
                unlink_quiet(backup)
    else:
        change = 'undo an interrupted restore: put the VM\'s disks back'
        if not check_mode:
            if vm.vmm.pid() is not None:
                vm.vmm.stop(timeout=0, force=True)
            for dest, backup in marker.get('backups') or []:
                if os.path.exists(backup):
                    os.rename(backup, dest)
    if not check_mode:
        for prepared, _dest in marker.get('prepared') or []:
            unlink_quiet(prepared)
    return [change]


# -- clones --------------------------------------------------------------------------------------------
def partial_clone(vm):
    """The marker of a clone killed before it wrote its record, or None."""
    marker = read_marker(vm)
    if marker and marker.get('op') == 'clone' and vm.record() is None:
        return marker
    return None


def undo_partial_clone(vm):
    """Remove what a clone killed before its record left: half-made disk copies, cloud-init
    image and clone-source (all created by that clone; the VM never existed). True if any."""
    marker = partial_clone(vm)
    if marker is None:
        return False
    for path in marker.get('files') or []:
        if os.path.dirname(path) == vm.vm_dir:
            unlink_quiet(path)
    rmtree_quiet(os.path.join(vm.vm_dir, snapshot_store().CLONE_SOURCE))
    clear_marker(vm)
    return True


def finish_clone(vm, marker, run_state, check_mode=False):
    """Finish a clone killed after it wrote its record: its disks, cloud-init image and
    clone-source are complete; redo the restore unless it got through. Caller holds the lock.
    Returns ``(changes, the VM's run state afterwards)``."""
    state = vm.live_state()
    work = marker.get('work') or os.path.join(vm.vm_dir, snapshot_store().CLONE_SOURCE)
    mode = marker.get('memory_restore_mode') or 'copy'
    record = vm.record() or {}
    if state in ('Running', 'Paused'):
        changes = ['finish an interrupted clone (its restore had completed)']
    else:
        changes = ['finish an interrupted clone: restore %s in a new VMM' % work]
        if not check_mode:
            if vm.vmm.pid() is not None:
                vm.vmm.stop(timeout=0, force=True)
            vm.vmm.cleanup()
            vm.restore(work, record.get('spec') or {}, memory_restore_mode=mode,
                       prefault=marker.get('prefault'), resume=run_state == 'running')
    if not check_mode:
        clear_marker(vm)
        drop_fork_source(record, work, mode)
    return changes, run_state if state is None else state.lower()


def drop_fork_source(record, work, memory_restore_mode):
    """Remove a fork's clone-source once its restore got through: the fork's snapshot was
    temporary, and vm.restore has copied its memory into the guest. Kept with ondemand (CH reads
    memory-ranges for as long as the VM runs) and for clones of a named snapshot (a hard link)."""
    if (record.get('cloned_from') or {}).get('fork') and memory_restore_mode == 'copy':
        rmtree_quiet(work)
