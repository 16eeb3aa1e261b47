# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ch_snapshot engine: converge one named snapshot of one VM (present, absent, restored).
The work itself is snapshot_ops' (take, restore) and the snapshot store's. No Ansible imports."""

from __future__ import annotations

import os

from ansible_collections.cloudhv.ch.plugins.module_utils import recovery
from ansible_collections.cloudhv.ch.plugins.module_utils import snapshot_ops
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import ChApiError, OptionError, StateError, VmmNotReachable
from ansible_collections.cloudhv.ch.plugins.module_utils.restore_options import check_restore_options
from ansible_collections.cloudhv.ch.plugins.module_utils.fsutil import fsync_dir, rmtree_quiet
from ansible_collections.cloudhv.ch.plugins.module_utils.snapshot_store import (
    MANIFEST,
    default_path,
    linked_clones,
    read_manifest,
    read_manifest_quiet,
    read_registry,
    resolve_path,
    snapshot_result,
    verify,
    write_registry,
)
from ansible_collections.cloudhv.ch.plugins.module_utils.store import Layout, VmLock, check_name, ensure_dir
from ansible_collections.cloudhv.ch.plugins.module_utils.vm import Vm


def _other_links(path):
    """How many other names the file ``path`` has (hard links), 0 when it is missing."""
    try:
        return os.stat(path).st_nlink - 1
    except OSError:
        return 0


class SnapshotManager:
    """Converges one snapshot of one VM; ``params`` are ch_snapshot's module parameters."""

    def __init__(self, params, check_mode=False, lock_timeout=60.0):
        self.params = params
        self.check_mode = check_mode
        self.vm = check_name(params['vm'], 'vm')
        self.name = check_name(params['name'], 'name')
        self.memory_restore_mode, self.prefault = check_restore_options(params.get('memory_restore_mode'),
                                                                        params.get('prefault'))
        if params.get('path') and not os.path.isabs(params['path']):
            raise OptionError('path', "must be an absolute path, got %r" % params['path'])
        self.lock_timeout = lock_timeout
        self.layout = Layout(params['state_dir'], params['run_dir'])
        self.layout.check_socket_path(self.vm)
        self.handle = Vm(self.layout, self.vm, params['binary'], api_timeout=params.get('api_timeout'))

    def run(self):
        state = self.params.get('state') or 'present'
        record = self.layout.read_record(self.vm)
        path = resolve_path(self.layout, self.vm, self.name, self.params.get('path'))
        if self.params.get('path'):
            registered = read_registry(self.layout, self.vm).get(self.name)
            if state == 'present' and registered and registered != path and read_manifest_quiet(registered):
                raise OptionError('name', "VM %s already has a snapshot named %s, at %s"
                                  % (self.vm, self.name, registered))
        if state in ('present', 'restored') and record is None:
            raise OptionError('vm', "there is no VM named %s on this host" % self.vm)
        manifest = self._existing(path)
        if state == 'present' and manifest is None:
            parent = os.path.dirname(path)
            if self.params.get('path') and not os.path.isdir(parent):
                raise OptionError('path', "the directory %s does not exist" % parent)
        if state == 'restored':
            if manifest is None:
                raise OptionError('name', "VM %s has no snapshot named %s (looked in %s)" % (self.vm, self.name, path))
            verify(path, manifest, self.params['binary'])
        try:
            if self.check_mode:
                return self._converge(state, path, manifest)
            self.layout.ensure_dirs()
            with VmLock(self.layout, self.vm, timeout=self.lock_timeout):
                return self._converge(state, path, manifest)
        finally:
            self.handle.close()

    def _existing(self, path):
        """The manifest at ``path`` if it is this VM's snapshot of this name; refuse anything else."""
        if not os.path.lexists(path):
            return None
        if not os.path.isdir(path):
            raise OptionError('path', "%s exists and is not a snapshot directory" % path)
        manifest = read_manifest(path)
        if manifest is None:
            if os.listdir(path):
                raise OptionError('path', "%s exists, is not empty and holds no snapshot (no %s)" % (path, MANIFEST))
            return None
        if manifest.get('vm') != self.vm or manifest.get('name') != self.name:
            raise OptionError('path', "%s holds snapshot %s of VM %s, not %s of %s"
                              % (path, manifest.get('name'), manifest.get('vm'), self.name, self.vm))
        return manifest

    def _result(self, changes, before, after, snap, warnings=()):
        return {'changed': bool(changes), 'changes': changes, 'diff': {'before': before, 'after': after},
                'snapshot': snap, 'warnings': list(warnings)}

    def _converge(self, state, path, manifest):
        changes = []
        if recovery.read_marker(self.handle):
            changes.extend(recovery.repair(self.handle, check_mode=self.check_mode)[0])
        before = {'state': 'present' if manifest else 'absent', 'path': path}
        if manifest:
            before['created'] = manifest.get('created')
        if state == 'absent':
            if manifest is None and not os.path.lexists(path):
                return self._result(changes, before, {'state': 'absent', 'path': path},
                                    dict(snapshot_result(path, None, size=False), name=self.name, vm=self.vm))
            users = linked_clones(self.layout, path)
            if users:
                raise OptionError('state', "snapshot %s of %s is the base of the disks of %s (cloned with "
                                  "clone_from.disks=overlay); remove %s first" % (
                                      self.name, self.vm, ', '.join(users), 'them' if len(users) > 1 else 'it'))
            snap = snapshot_result(path, manifest)
            changes.append('delete snapshot %s of %s (%s)' % (self.name, self.vm, path))
            warnings = []
            held = _other_links(os.path.join(path, 'memory-ranges'))
            if held:
                warnings.append("the memory-ranges of snapshot %s of %s is hard-linked by %d clone(s) (their "
                                "clone-source): its disk space is freed only when they are removed"
                                % (self.name, self.vm, held))
            if not self.check_mode:
                rmtree_quiet(path)
                fsync_dir(os.path.dirname(path))
                self._register(None)
            return self._result(changes, before, {'state': 'absent', 'path': path}, snap, warnings)
        if state == 'present':
            if manifest is not None:
                if not self.check_mode and read_registry(self.layout, self.vm).get(self.name) != path:
                    self._register(path)
                return self._result(changes, before, before, snapshot_result(path, manifest))
            return self._take(path, before, changes)
        return self._restore(path, manifest, before, changes)

    def _register(self, path):
        ensure_dir(self.layout.vm_dir(self.vm))
        snaps = read_registry(self.layout, self.vm)
        if path is None:
            snaps.pop(self.name, None)
        else:
            snaps[self.name] = path
        write_registry(self.layout, self.vm, snaps)

    def _take(self, path, before, changes):
        obs = self.handle.observe(use_recorded_launcher=True)
        if not obs.live:
            raise StateError("vm: %s is %s; a snapshot captures a running or paused VM (start it, or bring it "
                             "back from standby, first)" % (self.vm, obs.state), option='vm')
        include = self.params.get('include_disks', True)
        pause = ' (pausing it, then resuming it)' if obs.state == 'running' else ''
        changes.append('snapshot %s%s into %s%s' % (self.vm, pause, path, ', with copies of its disks' if include else ''))
        after = {'state': 'present', 'path': path}
        if self.check_mode:
            version = None
            try:
                version = (self.handle.client().ping() or {}).get('version')
            except (ChApiError, VmmNotReachable):
                pass
            snap = {'name': self.name, 'vm': self.vm, 'path': path, 'size_bytes': None, 'created': None,
                    'ch_version': version, 'includes_disks': bool(include)}
            return self._result(changes, before, after, snap)
        if path == default_path(self.layout, self.vm, self.name):
            ensure_dir(os.path.dirname(path))
        manifest = snapshot_ops.take(self.handle, obs.record, path, name=self.name, include_disks=include)
        self._register(path)
        after['created'] = manifest['created']
        return self._result(changes, before, after, snapshot_result(path, manifest))

    def _restore(self, path, manifest, before, changes):
        obs = self.handle.observe(use_recorded_launcher=True)
        resume = self.params.get('resume', True)
        changes.append('restore %s from snapshot %s (%s): stop its VMM%s, start a new one, %s'
                       % (self.vm, self.name, path,
                          ', put back its disks' if manifest.get('disks') else '',
                          'resume it' if resume else 'leave it paused'))
        warnings = []
        if not manifest.get('includes_disks'):
            warnings.append("snapshot %s has no disk copies (include_disks=false): the VM's memory comes back "
                            "but its disks keep their current content" % self.name)
        if not self.check_mode:
            snapshot_ops.restore(self.handle, path, manifest, resume=resume,
                                 memory_restore_mode=self.memory_restore_mode, prefault=self.prefault)
        after = dict(before, vm_state='running' if resume else 'paused')
        before = dict(before, vm_state=obs.state)
        return self._result(changes, before, after, snapshot_result(path, manifest), warnings)
