# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Taking a snapshot of a live VM, and restoring a VM from one. Both never leave the VM half-done:
each writes the crash marker (recovery.py) first, and undoes its own work on every error.

A snapshot is built in ``.<name>.partial`` next to its final path and renamed into place once
complete and fsynced, so nothing incomplete ever looks like a snapshot. No Ansible imports here;
the caller holds the VM's lock.
"""

from __future__ import annotations

import os
import time

from ansible_collections.cloudhv.ch.plugins.module_utils import images
from ansible_collections.cloudhv.ch.plugins.module_utils import recovery
from ansible_collections.cloudhv.ch.plugins.module_utils import snapshot_store as store
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import ChApiError, CloudHVError, HostError, StateError
from ansible_collections.cloudhv.ch.plugins.module_utils.fsutil import (
    fsync_dir,
    fsync_file,
    rmtree_quiet,
    sha256_file,
    unlink_quiet,
)
from ansible_collections.cloudhv.ch.plugins.module_utils.store import ensure_dir, write_json_atomic


# -- taking a snapshot ----------------------------------------------------------------------------
def _copy_disks(vm, record, tmp):
    """Copy the VM's writable disks (and its cloud-init image, for clones) into tmp/disks."""
    spec = record.get('spec') or {}
    out = []
    writable = [d for d in spec.get('disks') or [] if not d.get('readonly')]
    cidata = vm.cidata_path()
    has_cidata = spec.get('cloud_init') and os.path.isfile(cidata)
    if not writable and not has_cidata:
        return out
    ensure_dir(os.path.join(tmp, store.DISKS_DIR))
    for disk in writable:
        fname = os.path.join(store.DISKS_DIR, store.disk_file_name(disk))
        method = images.copy_file(disk['path'], os.path.join(tmp, fname), overwrite=False)
        out.append({'id': disk['id'], 'path': disk['path'], 'file': fname, 'image_type': disk.get('image_type'),
                    'size': os.path.getsize(os.path.join(tmp, fname)), 'method': method})
    if has_cidata:
        images.copy_file(cidata, os.path.join(tmp, store.DISKS_DIR, store.CIDATA_COPY), overwrite=False)
    fsync_dir(os.path.join(tmp, store.DISKS_DIR))
    return out


def take(vm, record, dest, name=None, include_disks=True, op='snapshot', keep_paused=False, extra_marker=None):
    """Snapshot the live ``vm`` into ``dest`` (which must not exist) and return the manifest.

    pause (if running) -> vm.snapshot into ``.<name>.partial`` next to ``dest`` -> copy disks ->
    manifest -> fsync -> rename -> resume. The VM is resumed on every way out, errors included,
    if it was running (unless ``keep_paused``: standby stops it next); the marker is cleared only
    then (with ``keep_paused`` the caller clears it)."""
    parent = os.path.dirname(dest)
    tmp = os.path.join(parent, '.%s.partial' % os.path.basename(dest))
    client = vm.client()
    info = client.info() or {}
    if info.get('state') not in ('Running', 'Paused'):
        raise StateError("VM %s is not running (CH reports %s); a snapshot needs a running or paused VM"
                         % (vm.name, info.get('state')))
    was_running = info.get('state') == 'Running'
    rmtree_quiet(tmp)
    marker = {'op': op, 'tmp': tmp, 'dest': dest, 'was_running': was_running,
              'run_state': (record or {}).get('run_state')}
    marker.update(extra_marker or {})
    recovery.write_marker(vm, marker)
    paused = False
    ok = False
    try:
        os.mkdir(tmp, 0o700)
        version = (client.ping() or {}).get('version')
        if was_running:
            client.pause()
            paused = True
        try:
            client.snapshot(tmp)
        except ChApiError as exc:
            raise HostError("snapshot of VM %s into %s failed: %s" % (vm.name, parent, exc.msg),
                            ch_messages=exc.messages)
        disks = _copy_disks(vm, record, tmp) if include_disks else []
        manifest = {
            'format': store.FORMAT, 'name': name or os.path.basename(dest), 'vm': vm.name,
            'created': store.now_iso(), 'created_ts': time.time(), 'ch_version': version,
            'includes_disks': bool(include_disks), 'vm_state': 'running' if was_running else 'paused',
            'record': record, 'files': _ch_files(tmp), 'disks': disks,
            'cidata': os.path.join(store.DISKS_DIR, store.CIDATA_COPY)
            if os.path.isfile(os.path.join(tmp, store.DISKS_DIR, store.CIDATA_COPY)) else None,
        }
        write_json_atomic(os.path.join(tmp, store.MANIFEST), manifest)
        fsync_dir(tmp)
        os.rename(tmp, dest)
        fsync_dir(parent)
        ok = True
        return manifest
    except (OSError, IOError) as exc:
        raise HostError("snapshot of VM %s into %s failed: %s" % (vm.name, dest, exc))
    finally:
        if not ok:
            rmtree_quiet(tmp)
        if paused and (not keep_paused or not ok):
            client.resume()          # an error here keeps the marker: the next run resumes
        if not keep_paused or not ok:
            recovery.clear_marker(vm)


def _ch_files(tmp):
    """Sizes (and sha256 of the small ones) of the files CH wrote, fsynced."""
    files = {}
    for fname in store.CH_FILES:
        fpath = os.path.join(tmp, fname)
        fsync_file(fpath)
        files[fname] = {'size': os.path.getsize(fpath)}
        if fname in store.CHECKSUMMED:
            files[fname]['sha256'] = sha256_file(fpath)
    return files


# -- restoring --------------------------------------------------------------------------------------
def _prepared_name(path):
    return os.path.join(os.path.dirname(path), '.%s.restore' % os.path.basename(path))


def _backup_name(path):
    return os.path.join(os.path.dirname(path), '.%s.pre-restore' % os.path.basename(path))


def _prepare_disks(pairs):
    """Copy the snapshot's disks next to the live ones (a full disk fails here, before anything
    is stopped). Returns [(prepared copy, live path)]."""
    prepared = []
    try:
        for src, dest in pairs:
            if not os.path.isdir(os.path.dirname(dest)):
                raise HostError("cannot restore disk %s: its directory is gone" % dest)
            images.copy_file(src, _prepared_name(dest), overwrite=True)
            prepared.append((_prepared_name(dest), dest))
    except CloudHVError:
        for tmp, _dest in prepared:
            unlink_quiet(tmp)
        raise
    return prepared


def restore(vm, path, manifest, resume=True, memory_restore_mode='copy', prefault=False):
    """Bring ``vm`` back to the snapshot in ``path`` (already verified).

    Disk copies are prepared next to the live disks first; then the VMM is stopped, the disks
    swapped in (the old ones kept aside until the restore worked), and the VM restored into a new
    VMM. If CH refuses, the old disks are put back and the VM is left stopped. Returns the new
    record."""
    record = vm.record()
    snap_record = manifest.get('record') or {}
    pairs = [(os.path.join(path, d['file']), d['path']) for d in manifest.get('disks') or []]
    prepared = _prepare_disks(pairs)
    backups = [(dest, _backup_name(dest)) for _src, dest in pairs]
    recovery.write_marker(vm, {'op': 'restore', 'snapshot': path, 'prepared': prepared, 'backups': backups})
    cur_spec = (record or {}).get('spec') or {}
    if vm.live_state() == 'Running':
        vm.client().pause()     # a paused VM skips the ACPI step of the stop ladder
    if cur_spec:
        vm.stop(cur_spec)
    else:
        vm.vmm.stop(timeout=0, force=True)
    for (tmp, dest), (_dest, backup) in zip(prepared, backups):
        unlink_quiet(backup)
        if os.path.exists(dest):
            os.link(dest, backup)
        os.rename(tmp, dest)
        fsync_dir(os.path.dirname(dest))
    snap_spec = snap_record.get('spec') or cur_spec
    try:
        vm.restore(path, snap_spec, memory_restore_mode=memory_restore_mode, prefault=prefault, resume=resume)
    except CloudHVError as exc:
        try:
            for dest, backup in backups:
                if os.path.exists(backup):
                    os.rename(backup, dest)
            if record:
                vm.write_record(dict(record, run_state='stopped'))
        finally:
            recovery.clear_marker(vm)
        raise StateError("restore of VM %s from %s failed: %s; its disks were put back and the VM is "
                         "stopped" % (vm.name, path, exc.msg), **exc.details)
    for _dest, backup in backups:
        unlink_quiet(backup)
    new = dict(record or {}, spec=snap_record.get('spec') or cur_spec,
               config=snap_record.get('config') or (record or {}).get('config'),
               run_state='running' if resume else 'paused')
    managed = list((record or {}).get('managed_files') or [])
    for item in snap_record.get('managed_files') or []:
        if item not in managed:
            managed.append(item)
    new['managed_files'] = managed
    vm.write_record(new)
    rmtree_quiet(store.standby_path(vm.layout, vm.name))
    recovery.clear_marker(vm)
    return new
