# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Clones and forks: a new VM made from a snapshot (``clone_from.snapshot`` / ``path``) or from
a running VM (``clone_from.vm`` alone: a temporary snapshot taken straight into the clone's
directory), restored into its own VMM with its own identity (MACs, taps, disk copies or qcow2
overlays, vsock CID, SMBIOS UUID, cloud-init instance id).

A clone writes the crash marker (op ``clone``) into its new directory before it creates anything
(recovery.py finishes or undoes it). No Ansible imports here.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time

from ansible_collections.cloudhv.ch.plugins.module_utils import images
from ansible_collections.cloudhv.ch.plugins.module_utils import recovery
from ansible_collections.cloudhv.ch.plugins.module_utils import snapshot_ops
from ansible_collections.cloudhv.ch.plugins.module_utils import spec as specmod
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import OptionError, StateError
from ansible_collections.cloudhv.ch.plugins.module_utils.restore_options import check_restore_options
from ansible_collections.cloudhv.ch.plugins.module_utils.fsutil import rmtree_quiet, unlink_quiet
from ansible_collections.cloudhv.ch.plugins.module_utils.snapshot_store import (
    CIDATA_COPY,
    CLONE_SOURCE,
    DISKS_DIR,
    MANIFEST,
    binary_version,
    ch_major,
    disk_file_name,
    read_manifest,
    resolve_path,
    verify,
)
from ansible_collections.cloudhv.ch.plugins.module_utils.store import VmLock, check_name, write_json_atomic

CLONE_DISK_MODES = ('copy', 'overlay')


class Clone:
    """A plan to create VM ``vm.name`` from a snapshot (or by forking a running VM).

    Built (and validated) before anything is touched; ``record`` is the clone's record as it
    will be, ``files`` the paths the clone will create, ``config`` the restore config."""

    def __init__(self, vm, clone_from, lock_timeout=60.0):
        self.vm = vm
        self.layout = vm.layout
        self.binary = vm.binary
        self.lock_timeout = lock_timeout
        opts = clone_from or {}
        self.source = opts.get('vm')
        self.snapshot = opts.get('snapshot')
        self.path = opts.get('path')
        self.memory_restore_mode, self.prefault = check_restore_options(
            opts.get('memory_restore_mode'), opts.get('prefault'), prefix='clone_from.')
        self.disk_mode = opts.get('disks') or 'copy'
        self.base_formats = {}     # overlay base -> its format (raw or qcow2)
        if self.disk_mode not in CLONE_DISK_MODES:
            raise OptionError('clone_from.disks', "must be copy or overlay, got %r" % (self.disk_mode,))
        # what a clone killed before it wrote its record left behind (removed by run())
        self.leftover = recovery.partial_clone(vm)
        if self.path and (self.source or self.snapshot):
            raise OptionError('clone_from', "give either path, or vm (with or without snapshot)")
        if not self.path and not self.source:
            raise OptionError('clone_from', "needs vm (and optionally snapshot) or path")
        if self.snapshot and not self.source:
            raise OptionError('clone_from.snapshot', "needs clone_from.vm")
        if self.source is not None:
            check_name(self.source, 'clone_from.vm')
            if self.source == vm.name:
                raise OptionError('clone_from.vm', "a VM cannot be cloned from itself")
        if self.snapshot is not None:
            check_name(self.snapshot, 'clone_from.snapshot')
        self.fork = bool(self.source and not self.snapshot)
        if self.fork and self.disk_mode == 'overlay':
            raise OptionError('clone_from.disks', "overlay needs a snapshot that stays as the clone's base, and a "
                              "fork's snapshot is temporary: name one with clone_from.snapshot, or use copy")
        self.manifest = None
        if self.fork:
            base = self.layout.read_record(self.source)
            if base is None:
                raise OptionError('clone_from.vm', "there is no VM named %s on this host" % self.source)
            with vm.sibling(self.source, binary=base.get('binary')) as source:
                obs = source.observe(record=base)
            if not obs.live:
                raise OptionError('clone_from.vm', "%s is %s: forking needs a running or paused VM (or name a "
                                  "snapshot with clone_from.snapshot)" % (self.source, obs.state))
            self.src_path = None
            self.src_config = (obs.info or {}).get('config') or base.get('config')
        else:
            if self.path:
                self.src_path = os.path.normpath(self.path)
                option = 'clone_from.path'
            else:
                if self.layout.read_record(self.source) is None and \
                        not os.path.isdir(self.layout.vm_dir(self.source)):
                    raise OptionError('clone_from.vm', "there is no VM named %s on this host" % self.source)
                self.src_path = resolve_path(self.layout, self.source, self.snapshot)
                option = 'clone_from.snapshot'
            self.manifest = read_manifest(self.src_path) if os.path.isdir(self.src_path) else None
            if not self.manifest:
                raise OptionError(option, "no snapshot at %s" % self.src_path)
            verify(self.src_path, self.manifest, self.binary, option=option)
            base = self.manifest.get('record') or {}
            self.source = self.manifest.get('vm')
            try:
                with open(os.path.join(self.src_path, 'config.json')) as handle:
                    self.src_config = json.load(handle)
            except (IOError, OSError, ValueError) as exc:
                raise StateError("cannot read %s/config.json: %s" % (self.src_path, exc))
        self.base = base
        self.spec, self.files = self._identity(base.get('spec') or {})
        self.record = {
            'spec': self.spec, 'config': vm.build_config(self.spec), 'binary': self.binary,
            'cloned_from': {'vm': self.source, 'snapshot': self.snapshot, 'path': self.src_path,
                            'fork': self.fork},
            'managed_files': list(self.files),
        }
        self.config = self._rewrite(copy.deepcopy(self.src_config))

    # the clone's identity --------------------------------------------------------------------
    def _identity(self, base_spec):
        vm = self.vm
        spec = copy.deepcopy(base_spec)
        files = []
        used = set()
        for disk in spec.get('disks') or []:
            if disk.get('readonly'):
                continue        # read-only disks are shared (CH takes a read lock)
            fname = os.path.basename(disk['path'])
            if self.disk_mode == 'overlay':
                self._overlay_base(disk)
                fname = os.path.splitext(fname)[0] + '.qcow2'
            if fname in used or fname in ('vm.json', 'cidata.iso', 'serial.log', 'ch.log'):
                fname = disk_file_name(disk)
            used.add(fname)
            disk['path'] = os.path.join(vm.vm_dir, fname)
            disk['size'] = None
            if os.path.lexists(disk['path']) and disk['path'] not in self._leftover_files():
                raise OptionError('clone_from', "the clone's disk %s already exists (left by an earlier VM "
                                  "named %s? remove it, e.g. with state=absent purge=true)" % (disk['path'], vm.name))
            files.append(disk['path'])
        for index, net in enumerate(spec.get('networks') or []):
            if net.get('user_tap'):
                raise OptionError('clone_from', "NIC %d of %s uses the tap %s, which a clone cannot share; "
                                  "attach the source to a bridge instead" % (index, self.source, net['user_tap']))
            net['mac'] = specmod.mac_address(vm.host, vm.name, index)
            net['tap'] = specmod.tap_name(vm.host, vm.name, index)
            # the source's static DHCP address is its own: the clone's NIC gets a dynamic lease
            net.pop('address', None)
        if spec.get('vsock'):
            spec['vsock'] = {'cid': self._free_cid(), 'socket': os.path.join(vm.vm_dir, 'vsock.sock')}
        if (spec.get('platform') or {}).get('uuid'):
            # SMBIOS identity: the clone is another machine (the guest sees it from its next boot:
            # the tables of the running guest are in the restored memory)
            spec['platform'] = dict(spec['platform'], uuid=specmod.machine_uuid(vm.host, vm.name))
        if spec.get('cloud_init'):
            suffix = hashlib.sha256(('%s\0%s\0%s' % (self.source, vm.name, time.time())).encode()).hexdigest()[:8]
            spec['cloud_init'] = dict(spec['cloud_init'], instance_id='iid-%s-%s' % (vm.name, suffix),
                                      hostname=_hostname(vm.name), digest=None)
            files.append(vm.cidata_path())
        return spec, files

    def _overlay_base(self, disk):
        """Turn a disk of the clone's spec into a qcow2 overlay on the snapshot's copy of it."""
        base = os.path.join(self.src_path, DISKS_DIR, disk_file_name(disk))
        if disk.get('image_type') not in ('raw', 'qcow2'):
            raise OptionError('clone_from.disks', "disk %s is %s: an overlay needs a raw or qcow2 base; use copy"
                              % (disk['id'], disk.get('image_type')))
        if not os.path.isfile(base):
            raise StateError("the snapshot has no copy of disk %s (taken with include_disks=false?); "
                             "a clone needs its own disks" % disk['id'], option='clone_from')
        self.base_formats[base] = disk['image_type']
        disk.update(backing_file=base, image_type='qcow2', image_type_explicit=True)

    def _leftover_files(self):
        return set((self.leftover or {}).get('files') or [])

    def _free_cid(self):
        used = set()
        for vm in self.layout.list_vms():
            record = self.layout.read_record(vm) or {}
            cid = ((record.get('spec') or {}).get('vsock') or {}).get('cid')
            if cid:
                used.add(cid)
        cid = 3
        while cid in used:
            cid += 1
        return cid

    def _rewrite(self, config):
        """The snapshot's config.json with the clone's identity: disk paths, taps, MACs, serial
        and console files/sockets, vsock, cloud-init image. Everything else is CH's echo."""
        built = self.record['config']
        for key, fields in (('disks', ('path', 'image_type', 'backing_files')), ('net', ('tap', 'mac'))):
            by_id = dict((d.get('id'), d) for d in built.get(key) or [])
            for item in config.get(key) or []:
                new = by_id.get(item.get('id'))
                if new is not None:
                    for field in fields:
                        if field in new:
                            item[field] = new[field]
        for key in ('serial', 'console'):
            if isinstance(config.get(key), dict) and isinstance(built.get(key), dict):
                for field in ('file', 'socket'):
                    if config[key].get(field) and built[key].get(field):
                        config[key][field] = built[key][field]
        if config.get('vsock') and built.get('vsock'):
            config['vsock'].update(cid=built['vsock']['cid'], socket=built['vsock']['socket'])
        if isinstance(config.get('platform'), dict) and (built.get('platform') or {}).get('uuid'):
            config['platform']['uuid'] = built['platform']['uuid']
        src_dir = self.layout.vm_dir(self.source) + '/'
        text = json.dumps(config)
        if src_dir in text:      # anything else that lived in the source's directory
            config = json.loads(text.replace(src_dir, self.vm.vm_dir + '/'))
        return config

    # results ---------------------------------------------------------------------------------
    def describe(self):
        if self.fork:
            what = "fork %s: pause it for a snapshot with copies of its disks, resume it" % self.source
        else:
            what = "clone from snapshot %s of %s (%s)" % (self.manifest.get('name'), self.source, self.src_path)
        first = ['remove what an interrupted clone left in %s' % self.vm.vm_dir] if self.leftover else []
        return first + ['%s; new MACs, taps and disk copies for %s' % (what, self.vm.name)]

    def predicted(self, paused):
        """The clone as check mode predicts it: a live VM running the rewritten config."""
        return self.record, {'config': self.config, 'state': 'Paused' if paused else 'Running'}

    # doing it -------------------------------------------------------------------------------
    def run(self, paused=False):
        """Create the clone (the caller holds the clone's lock; its directory may not exist)."""
        vm = self.vm
        recovery.undo_partial_clone(vm)
        new_dir = not os.path.isdir(vm.vm_dir) or not os.listdir(vm.vm_dir)
        vm.layout.ensure_dirs(vm.name)
        work = os.path.join(vm.vm_dir, CLONE_SOURCE)
        rmtree_quiet(work)
        started = False
        recovery.write_marker(vm, {'op': 'clone', 'files': list(self.files), 'work': work,
                                   'memory_restore_mode': self.memory_restore_mode, 'prefault': self.prefault})
        try:
            with VmLock(self.layout, self.source, timeout=self.lock_timeout):
                if self.fork:
                    self._fork(work)
                else:
                    images.copy_tree(self.src_path, work, hardlink=('memory-ranges',))
                    self._place_disks(os.path.join(self.src_path, DISKS_DIR), move=False)
                    cidata_src = os.path.join(self.src_path, DISKS_DIR, CIDATA_COPY)
            if self.fork:
                cidata_src = os.path.join(work, DISKS_DIR, CIDATA_COPY)
            unlink_quiet(os.path.join(work, MANIFEST))
            write_json_atomic(os.path.join(work, 'config.json'), self.config)
            if self.spec.get('cloud_init'):
                self._build_cidata(cidata_src)
            rmtree_quiet(os.path.join(work, DISKS_DIR))
            vm.write_record(dict(self.record, run_state='paused' if paused else 'running'))
            started = True
            vm.restore(work, self.spec, memory_restore_mode=self.memory_restore_mode, prefault=self.prefault,
                       resume=not paused)
            recovery.clear_marker(vm)
        except BaseException:
            if started:
                vm.teardown(self.spec)
            unlink_quiet(vm.layout.record_path(vm.name))
            for path in self.files:
                unlink_quiet(path)
            rmtree_quiet(work)
            recovery.clear_marker(vm)
            if new_dir:
                rmtree_quiet(vm.vm_dir)
            raise
        recovery.drop_fork_source(self.record, work, self.memory_restore_mode)

    def _fork(self, work):
        """Snapshot the running source straight into the clone's directory (paused only for the
        snapshot and its disk copies), then move the disk copies to the clone's paths."""
        record = self.layout.read_record(self.source)
        with self.vm.sibling(self.source, binary=record.get('binary')) as source:
            recovery.repair(source)
            manifest = snapshot_ops.take(source, record, work, name='fork-%s' % self.vm.name)
        have = binary_version(self.binary)
        if ch_major(have) != ch_major(manifest.get('ch_version')):
            raise OptionError('binary', "%s runs Cloud Hypervisor %s and %s is %s: CH snapshots do not "
                              "cross major versions" % (self.source, manifest.get('ch_version'),
                                                        self.binary, have))
        self.manifest = manifest
        self._place_disks(os.path.join(work, DISKS_DIR), move=True)

    def _place_disks(self, disks_dir, move):
        if self.disk_mode == 'overlay':
            for disk in self.spec.get('disks') or []:
                if disk['path'] in self.files:
                    images.create_overlay(disk['path'], disk['backing_file'], option='clone_from.disks',
                                          backing_format=self.base_formats[disk['backing_file']])
            return
        by_id = dict((d['id'], d['path']) for d in self.spec.get('disks') or [] if d['path'] in self.files)
        src_disks = dict((d['id'], d) for d in (self.base.get('spec') or {}).get('disks') or [])
        for disk_id, path in by_id.items():
            copy_src = os.path.join(disks_dir, disk_file_name(src_disks[disk_id]))
            if not os.path.isfile(copy_src):
                raise StateError("the snapshot has no copy of disk %s (taken with include_disks=false?); "
                                 "a clone needs its own disks" % disk_id, option='clone_from')
            if move:
                os.rename(copy_src, path)
            else:
                images.copy_file(copy_src, path, overwrite=False)

    def _build_cidata(self, cidata_src):
        from ansible_collections.cloudhv.ch.plugins.module_utils import cloudinit
        import yaml
        if os.path.isfile(cidata_src):
            files = cloudinit.read_iso(cidata_src)
        else:
            files = {cloudinit.USER_DATA: cloudinit.EMPTY_USER_DATA}
        meta = {}
        if files.get(cloudinit.META_DATA):
            meta = yaml.safe_load(files[cloudinit.META_DATA].decode('utf-8')) or {}
        meta['instance-id'] = self.spec['cloud_init']['instance_id']
        meta['local-hostname'] = self.spec['cloud_init']['hostname']
        files[cloudinit.META_DATA] = yaml.safe_dump(meta, sort_keys=False, default_flow_style=False).encode('utf-8')
        cloudinit.build_iso(self.vm.cidata_path(), files)
        self.spec['cloud_init']['digest'] = cloudinit.digest_files(files)
        self.record['config'] = self.vm.build_config(self.spec)


def _hostname(name):
    from ansible_collections.cloudhv.ch.plugins.module_utils.cloudinit import default_hostname
    return default_hostname(name)
