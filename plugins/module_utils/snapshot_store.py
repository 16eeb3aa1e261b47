# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The snapshot store, read-only: where snapshots live, their manifests, the per-VM registry of
named snapshots, verification before a restore, and who depends on a snapshot.

A snapshot directory holds what CH's ``vm.snapshot`` writes (``config.json``, ``state.json``,
``memory-ranges``), copies of the VM's writable disks in ``disks/`` and ``manifest.json`` (CH
version, the VM's record, sizes, sha256 of config.json and state.json, time). Writing one is
snapshot_ops.take's job; the registry is written by the ch_snapshot engine.

No Ansible imports here.
"""

from __future__ import annotations

import os
import time

from ansible_collections.cloudhv.ch.plugins.module_utils.errors import OptionError, StateError, VmmError
from ansible_collections.cloudhv.ch.plugins.module_utils.fsutil import sha256_file
from ansible_collections.cloudhv.ch.plugins.module_utils import vm_record
from ansible_collections.cloudhv.ch.plugins.module_utils.store import read_json, write_json_atomic

FORMAT = 1
MANIFEST = 'manifest.json'
CH_FILES = ('config.json', 'state.json', 'memory-ranges')
CHECKSUMMED = ('config.json', 'state.json')
DISKS_DIR = 'disks'
CIDATA_COPY = 'cidata.iso'
REGISTRY = 'snapshots.json'
STANDBY = 'standby'
CLONE_SOURCE = 'clone-source'


def now_iso():
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())


def ch_major(version):
    """'53.0.0' / 'v53.0' -> 53 (None when unknown)."""
    try:
        return int(str(version).strip().lstrip('vV').split('.', 1)[0])
    except (TypeError, ValueError):
        return None


def binary_version(binary):
    """The version `binary --version` reports ('53.0'); VmmError when it cannot be run."""
    from ansible_collections.cloudhv.ch.plugins.module_utils.hostinfo import binary_facts
    facts = binary_facts(binary)
    if not facts.get('version'):
        raise VmmError("binary: cannot tell the version of %s: %s"
                       % (binary, facts.get('error') or 'no version in its output'), option='binary')
    return facts['version']


def disk_file_name(disk):
    return '%s-%s' % (disk['id'], os.path.basename(disk['path']))


# -- where snapshots live -------------------------------------------------------------------------
def default_path(layout, vm, name):
    return os.path.join(layout.snapshots_dir(vm), name)


def standby_path(layout, vm):
    return os.path.join(layout.vm_dir(vm), STANDBY)


def registry_path(layout, vm):
    return os.path.join(layout.vm_dir(vm), REGISTRY)


def read_registry(layout, vm):
    data = read_json(registry_path(layout, vm)) or {}
    snaps = data.get('snapshots') if isinstance(data, dict) else None
    return dict(snaps) if isinstance(snaps, dict) else {}


def write_registry(layout, vm, snaps):
    write_json_atomic(registry_path(layout, vm), {'snapshots': snaps})


def resolve_path(layout, vm, name, path=None):
    """The snapshot directory: the given path, else the one registered for the name, else the
    default ``<state_dir>/vms/<vm>/snapshots/<name>``."""
    if path:
        return os.path.normpath(path)
    registered = read_registry(layout, vm).get(name)
    return registered or default_path(layout, vm, name)


def read_manifest(path):
    """The manifest of the snapshot in ``path``, or None when there is none."""
    manifest = read_json(os.path.join(path, MANIFEST))
    if manifest is not None and not isinstance(manifest, dict):
        raise StateError("%s is not a snapshot manifest" % os.path.join(path, MANIFEST))
    return manifest


def snapshot_result(path, manifest, size=True):
    manifest = manifest or {}
    return {
        'name': manifest.get('name'), 'vm': manifest.get('vm'), 'path': path,
        'size_bytes': _disk_usage(path) if size and os.path.isdir(path) else None,
        'created': manifest.get('created'), 'ch_version': manifest.get('ch_version'),
        'includes_disks': manifest.get('includes_disks'),
    }


def list_snapshots(layout, vm):
    """ch_vm_info: the VM's snapshots (registered or in the default directory), sorted by name."""
    found = dict(read_registry(layout, vm))
    try:
        for entry in os.listdir(layout.snapshots_dir(vm)):
            if not entry.startswith('.'):
                found.setdefault(entry, os.path.join(layout.snapshots_dir(vm), entry))
    except OSError:
        pass
    out = []
    for name in sorted(found):
        try:
            manifest = read_manifest(found[name])
        except StateError:
            manifest = None
        if manifest and manifest.get('vm') == vm:
            out.append(snapshot_result(found[name], manifest))
    return out


def verify(path, manifest, binary, option='name'):
    """Refuse a snapshot CH could not restore: a checksum that does not match its manifest, or a
    CH major version other than the binary's. Read-only; called before anything is stopped."""
    for fname in CHECKSUMMED:
        want = ((manifest.get('files') or {}).get(fname) or {}).get('sha256')
        fpath = os.path.join(path, fname)
        try:
            have = sha256_file(fpath)
        except (IOError, OSError) as exc:
            raise StateError("snapshot %s is damaged: cannot read %s (%s)" % (path, fname, exc))
        if not want or have != want:
            raise StateError("snapshot %s is damaged: the sha256 of %s does not match its manifest "
                             "(%s, expected %s); refusing to restore it" % (path, fname, have, want),
                             option=option)
    mem = os.path.join(path, 'memory-ranges')
    want_size = ((manifest.get('files') or {}).get('memory-ranges') or {}).get('size')
    if not os.path.isfile(mem) or (want_size is not None and os.path.getsize(mem) != want_size):
        raise StateError("snapshot %s is damaged: memory-ranges is missing or has the wrong size" % path,
                         option=option)
    for disk in manifest.get('disks') or []:
        dpath = os.path.join(path, disk['file'])
        if not os.path.isfile(dpath) or os.path.getsize(dpath) != disk['size']:
            raise StateError("snapshot %s is damaged: its copy of disk %s (%s) is missing or has the "
                             "wrong size" % (path, disk['id'], disk['file']), option=option)
    copied = set(d['id'] for d in manifest.get('disks') or [])
    for disk in ((manifest.get('record') or {}).get('spec') or {}).get('disks') or []:
        if disk['id'] not in copied and not os.path.exists(disk['path']):
            raise StateError("snapshot %s needs the disk %s (%s), which it holds no copy of and which no "
                             "longer exists" % (path, disk['path'], disk['id']), option=option)
    have_version = binary_version(binary)
    if ch_major(have_version) != ch_major(manifest.get('ch_version')):
        raise OptionError('binary', "snapshot %s was taken with Cloud Hypervisor %s and %s is %s: CH "
                          "snapshots do not cross major versions; restore it with a %d.x binary"
                          % (path, manifest.get('ch_version'), binary, have_version,
                             ch_major(manifest.get('ch_version')) or 0))


def read_manifest_quiet(path):
    try:
        return read_manifest(path)
    except StateError:
        return None


def standby_manifest(layout, vm):
    """The manifest of the VM's standby state, None when it has none (or a damaged one)."""
    return read_manifest_quiet(standby_path(layout, vm))


def linked_clones(layout, directory, exclude=None):
    """VMs whose disks are qcow2 overlays on a file under ``directory`` (a snapshot, or a VM's
    directory with its snapshots): removing it would break them."""
    prefix = os.path.normpath(directory) + os.sep
    out = []
    for vm in layout.list_vms():
        if vm == exclude:
            continue
        disks = vm_record.disks(layout.read_record(vm))
        if any((d.get('backing_file') or '').startswith(prefix) for d in disks):
            out.append(vm)
    return out


def _disk_usage(path):
    from ansible_collections.cloudhv.ch.plugins.module_utils.images import disk_usage
    return disk_usage(path)
