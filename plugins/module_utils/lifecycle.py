# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The VM lifecycle engine behind ch_vm and ch_vm_info: observe a VM, plan what it takes to
reach the desired state, and (outside check mode) do it.

Plain Python, no Ansible imports: ``VmManager(...).converge(state)`` returns the module result.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import hashlib
import json
import os
import shutil
import socket

from ansible_collections.cloudhv.ch.plugins.module_utils import dhcp
from ansible_collections.cloudhv.ch.plugins.module_utils import spec as specmod
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import (
    ChApiError,
    CloudHVError,
    HostError,
    OptionError,
    RecordUnreadable,
    StateError,
    VmmNotReachable,
)
from ansible_collections.cloudhv.ch.plugins.module_utils.store import (
    Layout,
    VmLock,
    check_name,
    ensure_dir,
    read_json,
    read_marker,
    read_text,
    write_json_atomic,
)
from ansible_collections.cloudhv.ch.plugins.module_utils.vmm import Vmm

RUN_STATES = ('running', 'paused', 'stopped')
# NIC indexes whose derived tap names state=absent force=true looks for when the record is unreadable
MAX_NICS = 64
LIVE_STATES = {'Running': 'running', 'Paused': 'paused'}


def _snapmod():
    """The snapshot engine (snapshot.py), loaded only by runs that need it: clones, standby,
    repairs, snapshot listings. A no-change run does not pay for importing it."""
    from ansible_collections.cloudhv.ch.plugins.module_utils import snapshot
    return snapshot


class Observed(object):
    """What is on the host now for one VM."""

    def __init__(self, record, pid, info, state):
        self.record = record
        self.pid = pid
        self.info = info          # vm.info of a live VMM, or None
        self.state = state        # absent | stopped | crashed | created | running | paused

    @property
    def live(self):
        return self.state in ('running', 'paused')


class Plan(object):
    """Human-readable changes plus the callables that make them."""

    def __init__(self):
        self.changes = []
        self.steps = []
        self.restart_required = False
        self.warnings = []

    def add(self, change, step=None):
        if change:
            self.changes.append(change)
        if step is not None:
            self.steps.append(step)


def user_data_digest(cloud_init):
    return hashlib.sha256(json.dumps(cloud_init, sort_keys=True, default=str).encode()).hexdigest()


class VmManager(object):
    """Converges one VM. ``params`` are ch_vm's module parameters."""

    def __init__(self, params, check_mode=False, host=None, lock_timeout=60.0):
        self.params = params
        self.name = check_name(params['name'])
        self.layout = Layout(params['state_dir'], params['run_dir'])
        self.check_mode = check_mode
        self.host = host or specmod.host_id()
        self.lock_timeout = lock_timeout
        self.vm_dir = self.layout.vm_dir(self.name)
        self.vmm = Vmm(params['binary'], self.layout.socket_path(self.name),
                       self.layout.pid_path(self.name), self.layout.log_path(self.name),
                       api_timeout=params.get('api_timeout') or 30.0,
                       launcher=params.get('launcher') or 'auto')
        self._netlink = None
        self.created_files = []
        self.clone = None         # snapshot.Clone when this run creates the VM from clone_from
        self._boots = False       # this run's plan (re)starts the VMM with the desired config
        self._ram_ceiling = None  # the running VMM's RAM ceiling, as recorded when it started

    # -- observation ------------------------------------------------------------------------
    def observe(self):
        record = self.layout.read_record(self.name)
        if not self.params.get('launcher') and record and record.get('launcher'):
            self.vmm.launcher = record['launcher']   # ch_snapshot: restart the VMM the recorded way
        pid = self.vmm.pid()
        info = None
        if pid is not None:
            try:
                info = self.vmm.client().info()
            except ChApiError as exc:
                if exc.status != 404:
                    raise
            except VmmNotReachable:
                info = None
            if info is None:
                return Observed(record, pid, None, 'created' if record else 'absent')
            state = LIVE_STATES.get(info.get('state'), 'created')
            return Observed(record, pid, info, state)
        if record is None:
            return Observed(None, None, None, 'absent')
        if record.get('run_state') in ('running', 'paused'):
            # a guest that powered itself off ends its VMM cleanly: stopped, not crashed
            return Observed(record, None, None, 'stopped' if self.vmm.exited_on_its_own() else 'crashed')
        if record.get('run_state') == 'standby' and _snapmod().standby_manifest(self.layout, self.name):
            return Observed(record, None, None, 'standby')
        return Observed(record, None, None, 'stopped')

    # -- desired state ----------------------------------------------------------------------
    def desired(self, record):
        """Normalized spec, cloud-init rendering and the VmConfig, all validated."""
        base = record or (self.clone.record if self.clone else None)
        # options the task leaves unset keep the record's (a clone's: its source's) values
        spec = specmod.normalize(self.params, self.vm_dir, self.host, base)
        if spec['payload'] is None:
            raise OptionError('firmware', "a new VM needs exactly one of firmware or kernel")
        cloud = None
        ci = self.params.get('cloud_init')
        if ci and any(v is not None for v in ci.values()):
            from ansible_collections.cloudhv.ch.plugins.module_utils import cloudinit
            cloud = cloudinit.render(self.name, ci.get('user_data'), ci.get('meta_data'),
                                     ci.get('network_config'))
            spec['cloud_init'] = {'digest': cloud['digest'], 'instance_id': cloud['instance_id'],
                                  'hostname': cloud['hostname']}
        elif ci is None:    # unset: the recorded one stays (cloud_init: {} removes it)
            spec['cloud_init'] = copy.deepcopy(((base or {}).get('spec') or {}).get('cloud_init'))
        else:
            spec['cloud_init'] = None
        config = self.build_config(spec)
        return spec, cloud, config

    def cidata_path(self):
        return os.path.join(self.vm_dir, 'cidata.iso')

    def build_config(self, spec):
        return specmod.build_config(
            spec, self.layout.serial_path(self.name),
            os.path.join(self.layout.run_dir, '%s.serial.sock' % self.name),
            os.path.join(self.layout.run_dir, '%s.console.sock' % self.name),
            self.cidata_path() if spec.get('cloud_init') else None)

    def check_host_inputs(self, spec, starting):
        """Files and bridges the spec refers to must exist: fail before touching anything."""
        payload = spec['payload'] or {}
        for key in ('firmware', 'kernel', 'initramfs'):
            if payload.get(key) and not os.path.isfile(payload[key]):
                raise OptionError(key, "%s does not exist or is not a file" % payload[key])
        for index, disk in enumerate(spec['disks']):
            opt = 'disks[%d]' % index
            if self.clone and disk['path'] in self.clone.files:
                continue
            if os.path.exists(disk['path']):
                if os.path.isdir(disk['path']):
                    raise OptionError('%s.path' % opt, "%s is a directory" % disk['path'])
                self._check_image_header(disk, opt)
                continue
            if disk['backing_file']:
                if not os.path.isfile(disk['backing_file']):
                    raise OptionError('%s.backing_file' % opt, "base image %s does not exist"
                                      % disk['backing_file'])
            elif disk['size'] is None:
                raise OptionError('%s.path' % opt, "%s does not exist; give size to create a sparse "
                                  "raw image, or backing_file to create a qcow2 overlay" % disk['path'])
            parent = os.path.dirname(disk['path'])
            if not os.path.isdir(parent) and not parent.startswith(self.vm_dir):
                raise OptionError('%s.path' % opt, "directory %s does not exist" % parent)
        for index, dev in enumerate(spec['devices']):
            if not os.path.exists(dev):
                raise OptionError('devices[%d]' % index, "%s does not exist" % dev)
        for index, net in enumerate(spec['networks']):
            if net['bridge'] and not is_bridge(net['bridge']) and not self.netlink().bridge_exists(net['bridge']):
                raise OptionError('networks[%d].bridge' % index, "bridge %s does not exist "
                                  "(create it first, e.g. with cloudhv.ch.ch_network)" % net['bridge'])
        for index, net in enumerate(spec['networks']):
            if net['user_tap'] and starting and self.netlink().link(net['user_tap']) is None:
                raise OptionError('networks[%d].tap' % index, "tap %s does not exist" % net['user_tap'])

    @staticmethod
    def _check_image_header(disk, opt):
        """A format guessed from the file name must not contradict the file's header (Ubuntu's
        cloud '.img' files are qcow2): CH would read it as raw and the guest would not boot.
        An image_type the user set explicitly is trusted."""
        if disk.get('image_type_explicit'):
            return
        found = specmod.sniff_image_type(disk['path'])
        if found and found != disk['image_type']:
            raise OptionError('%s.image_type' % opt, "%s looks like a %s image but its name suggests %s: "
                              "set image_type explicitly (for example image_type: %s)"
                              % (disk['path'], found, disk['image_type'], found))

    def launch_vmm(self):
        """Start a bare VMM for this VM (start, restore, clone, standby wake-up); its pid."""
        return self.vmm.launch(start_timeout=max(10.0, float(self.params.get('api_timeout') or 30)))

    def netlink(self):
        if self._netlink is None:
            from ansible_collections.cloudhv.ch.plugins.module_utils.netlink import Netlink
            self._netlink = Netlink().__enter__()
        return self._netlink

    def close(self):
        if self._netlink is not None:
            self._netlink.__exit__(None, None, None)
            self._netlink = None
        self.vmm.close()

    # -- the result ------------------------------------------------------------------------
    def vm_result(self, state, record, info=None, pid=None):
        record = record or {}
        spec = record.get('spec') or {}
        config = (info or {}).get('config') or record.get('config')
        console_pty = None
        if info and isinstance(info.get('config'), dict):
            for key in ('console', 'serial'):
                dev = info['config'].get(key) or {}
                if dev.get('mode') == 'Pty' and dev.get('file'):
                    console_pty = dev['file']
                    break
        return {
            'name': self.name,
            'state': state,
            'pid': pid,
            'api_socket': self.vmm.socket_path if pid else None,
            'config': record.get('config'),
            'live_config': (info or {}).get('config'),
            'memory_actual_size': (info or {}).get('memory_actual_size'),
            'serial_file': (config or {}).get('serial', {}).get('file') if spec.get('serial') == 'file' else None,
            'console_pty': console_pty,
            'log_file': self.layout.log_path(self.name),
            'networks': [self._nic_result(n) for n in spec.get('networks') or []],
            'disks': [{'id': d['id'], 'path': d['path'], 'managed': d['path'] in record.get('managed_files', [])}
                      for d in spec.get('disks') or []],
        }

    def _nic_result(self, net):
        address, source = dhcp.nic_address(self.layout, net)
        return {'id': net['id'], 'tap': net['tap'], 'mac': net['mac'], 'bridge': net['bridge'],
                'address': address, 'address_source': source}

    @staticmethod
    def public_spec(spec):
        """The user-visible spec for diffs: no None values; cloud-init only as a digest."""
        if not spec:
            return {}
        out = {}
        for key, value in spec.items():
            if value is None or value == [] or value == {}:
                continue
            out[key] = value
        return out

    # -- converge ---------------------------------------------------------------------------
    def converge(self, state):
        self.layout.check_socket_path(self.name)
        if state == 'absent':
            return self._locked(self._converge_absent)
        # Validate everything before the lock: bad input must not even create the lock file.
        record = self.layout.read_record(self.name)
        if record is None and self.params.get('clone_from'):
            self.clone = _snapmod().Clone(self, self.params['clone_from'])
        if state == 'standby' and record is None and not self.clone:
            raise OptionError('state', "standby keeps the state of a running VM; %s does not exist" % self.name)
        spec = self.desired(record)[0]
        dhcp.check_vm_addresses(self.layout, self.name, spec['networks'])
        # a user tap must exist for a VM that will run (checked again once the state is known)
        self.check_host_inputs(spec, starting=state in ('running', 'paused', 'restarted'))
        return self._locked(lambda: self._converge_present(state))

    def _locked(self, func):
        if self.check_mode:
            try:
                return func()
            finally:
                self.close()
        self.layout.ensure_dirs()
        try:
            with VmLock(self.layout, self.name, timeout=self.lock_timeout):
                return func()
        finally:
            self.close()

    def _result(self, plan, before, after, vm, warnings=()):
        return {
            'changed': bool(plan.changes),
            'changes': plan.changes,
            'restart_required': plan.restart_required,
            'diff': {'before': before, 'after': after},
            'vm': vm,
            'warnings': list(plan.warnings) + list(warnings),
        }

    def _converge_absent(self):
        try:
            self.layout.read_record(self.name)
        except RecordUnreadable as exc:
            if not self.params.get('force'):
                raise
            return self._remove_unreadable(exc)
        if self.params.get('purge') and os.path.isdir(self.vm_dir):
            users = _snapmod().linked_clones(self.layout, self.vm_dir, exclude=self.name)
            if users:
                raise OptionError('purge', "the snapshots of %s are the base of the disks of %s (cloned with "
                                  "clone_from.disks=overlay); remove %s first, or remove %s without purge"
                                  % (self.name, ', '.join(users), 'them' if len(users) > 1 else 'it', self.name))
        obs = self.observe()
        plan = Plan()
        if read_marker(self.layout, self.name):
            plan.changes.extend(_snapmod().repair_before_removal(self.layout, self.name, self.vmm,
                                                                 check_mode=self.check_mode))
            if not self.check_mode:
                obs = self.observe()
        before = {'state': obs.state, 'spec': self.public_spec((obs.record or {}).get('spec'))}
        purge = self.params.get('purge')
        record = obs.record or {}
        if obs.pid is not None:
            plan.add('stop the VMM (pid %d)' % obs.pid, lambda: self.vmm.stop(
                timeout=self.params.get('stop_timeout', 30), force=self.params.get('force')))
        elif os.path.exists(self.vmm.socket_path) or os.path.exists(self.vmm.pid_file):
            plan.add('remove the stale socket and pid file', self.vmm.cleanup)
        taps = [n['tap'] for n in (record.get('spec') or {}).get('networks', []) if n.get('managed_tap')]
        present_taps = [t for t in taps if self.netlink().link(t) is not None] if taps else []
        if present_taps:
            plan.add('remove taps %s' % ', '.join(present_taps), lambda: self._remove_taps(present_taps))
        networks = (record.get('spec') or {}).get('networks') or []
        files, leases = dhcp.vm_removal(self.layout, self.name, networks) if networks else ({}, [])
        if files or leases:
            plan.add('remove the DHCP host entries and names of the VM on %s%s' % (
                ', '.join(sorted(set(files) | set(b for b, _l in leases))),
                ' and release its leases (%s)' % ', '.join(l['ip'] for _b, l in leases) if leases else ''),
                lambda: (dhcp.apply_vm_changes(self.layout, files), dhcp.release_leases(self.layout, leases)))
        if obs.record is not None:
            plan.add('remove the record', lambda: self._remove_record(record, purge))
        if purge and os.path.isdir(self.vm_dir):
            managed = set(record.get('managed_files', []))
            user_disks = set(d['path'] for d in (record.get('spec') or {}).get('disks', [])
                             if d['path'] not in managed)
            plan.add('purge %s (managed disks, cloud-init image, logs, snapshots)' % self.vm_dir,
                     lambda: self._purge(managed, user_disks))
        if not self.check_mode:
            for step in plan.steps:
                step()
            for path in (self.layout.lock_path(self.name),):
                _unlink_quiet(path)
        return self._result(plan, before, {'state': 'absent', 'spec': {}},
                            {'name': self.name, 'state': 'absent'})

    def _remove_unreadable(self, exc):
        """state=absent force=true for a VM whose record cannot be used: remove what is known
        without it. Its VMM is found through the pid file and the socket (whatever the binary) and
        stopped; its taps are the names the collection derives for this VM (and a live VMM's NICs);
        then its run files and the record go. No disk is touched, wherever it is."""
        plan = Plan()
        plan.warnings.append("%s: the record could not be used (%s); removed with force=true, its disks kept"
                             % (self.name, exc.details.get('problem') or exc.msg))
        self.vmm.binary = None          # unknown without the record
        pid = self.vmm.pid()
        taps = set(specmod.tap_name(self.host, self.name, index) for index in range(MAX_NICS))
        if pid is not None:
            try:
                taps.update(n.get('tap') for n in ((self.vmm.client().info() or {}).get('config') or {}).get('net') or [])
            except (ChApiError, VmmNotReachable):
                pass
            plan.add('stop the VMM (pid %d)' % pid, lambda: self.vmm.stop(
                timeout=self.params.get('stop_timeout', 30), force=True))
        elif os.path.lexists(self.vmm.socket_path) or os.path.lexists(self.vmm.pid_file):
            plan.add('remove the stale socket and pid file', self.vmm.cleanup)
        present = sorted(link['name'] for link in self.netlink().links()
                         if link['name'] in taps and link['name'].startswith(specmod.TAP_PREFIX))
        if present:
            plan.add('remove taps %s' % ', '.join(present), lambda: self._remove_taps(present))
        sockets = [p for p in (os.path.join(self.layout.run_dir, '%s.%s.sock' % (self.name, kind))
                               for kind in ('serial', 'console')) if os.path.lexists(p)]
        if sockets:
            plan.add('remove %s' % ', '.join(sockets), lambda: [_unlink_quiet(p) for p in sockets])
        plan.add('remove the unreadable record %s' % self.layout.record_path(self.name),
                 lambda: os.unlink(self.layout.record_path(self.name)))
        if self.params.get('purge'):
            plan.warnings.append("purge: skipped for %s: without a readable record nothing tells its own files "
                                 "from the user's; %s stays, remove what is no longer needed by hand"
                                 % (self.name, self.vm_dir))
        if not self.check_mode:
            for step in plan.steps:
                step()
            _unlink_quiet(self.layout.lock_path(self.name))
        return self._result(plan, {'state': 'unknown', 'spec': {}}, {'state': 'absent', 'spec': {}},
                            {'name': self.name, 'state': 'absent'})

    def managed_list_path(self):
        return os.path.join(self.vm_dir, 'managed.json')

    def _remove_record(self, record, purge):
        # Without purge the files we created stay, and so does the knowledge that they are ours:
        # a later purge of a re-created VM of this name still cleans them up.
        managed = [p for p in record.get('managed_files', []) if os.path.exists(p)]
        if managed and not purge:
            write_json_atomic(self.managed_list_path(), {'managed_files': managed})
        os.unlink(self.layout.record_path(self.name))

    def _purge(self, managed, user_disks):
        for path in managed:
            if path not in user_disks:
                _unlink_quiet(path)
        if os.path.isdir(self.vm_dir):
            # Everything in the VM's own directory is ours (record, ISO, logs, snapshots, managed
            # disks), except user disks the user chose to keep there: those survive.
            for root, dirs, files in os.walk(self.vm_dir, topdown=False):
                for fname in files:
                    path = os.path.join(root, fname)
                    if path not in user_disks:
                        os.unlink(path)
                for dname in dirs:
                    try:
                        os.rmdir(os.path.join(root, dname))
                    except OSError:
                        pass
            try:
                os.rmdir(self.vm_dir)
            except OSError:
                pass

    def _converge_present(self, state):
        obs = self.observe()
        before = {'state': obs.state, 'spec': self.public_spec((obs.record or {}).get('spec'))}
        plan = Plan()
        obs = self._snapshot_pre_steps(obs, state, plan)
        spec, cloud, config = self.desired(obs.record)
        target = state
        if state == 'present':
            target = {'running': 'running', 'paused': 'paused', 'standby': 'standby'}.get(obs.state, 'stopped')
            if obs.state == 'crashed':
                target = 'stopped'
        elif state == 'restarted':
            target = 'running'
        starting = target in ('running', 'paused') and not obs.live
        self.check_host_inputs(spec, starting)
        if starting:
            self.check_capacity(spec, plan)

        if obs.record:
            record = copy.deepcopy(obs.record)
        else:
            left = read_json(self.managed_list_path()) or {}
            record = {'managed_files': [p for p in left.get('managed_files', []) if os.path.exists(p)]}
        # 1. files: managed disks and the cloud-init image; the NICs' entries in the DHCP server
        # of their bridges (before a start, so the guest's first request finds them)
        self.plan_files(spec, cloud, record, plan)
        old_networks = ((obs.record or {}).get('spec') or {}).get('networks') or []
        hosts = dhcp.vm_nic_changes(self.layout, self.name, spec['networks'], old_networks) \
            if spec['networks'] or old_networks else {}
        if hosts:
            plan.add('DHCP host entries (static leases and names) on %s' % ', '.join(sorted(hosts)),
                     lambda: dhcp.apply_vm_changes(self.layout, hosts))
        # 2. the record
        new_record = dict(record, spec=spec, config=config, binary=self.params['binary'])
        # the launcher is kept only when it is not the default, so records of earlier releases
        # do not change; ch_snapshot (no launcher option) restarts the VMM the same way
        new_record.pop('launcher', None)
        if self.vmm.launcher not in ('auto', 'direct'):
            new_record['launcher'] = self.vmm.launcher
        # 3. the run state
        if obs.state == 'crashed':
            plan.add('clean up after the crashed VMM', self.vmm.cleanup)
        if obs.state in ('crashed', 'stopped') and target == 'stopped':
            self._plan_leftovers(obs, spec, plan)
        if obs.state == 'created' and target == 'stopped':
            plan.add('stop the VMM (VM not booted)', lambda: self._stop(spec))
        if target == 'standby':
            if obs.live:
                plan.add('put the VM in standby: snapshot its memory into %s and stop the VMM'
                         % _snapmod().standby_path(self.layout, self.name),
                         lambda: _snapmod().go_standby(self, spec, new_record, obs.state))
            elif obs.state != 'standby':
                raise StateError("state: standby keeps the state of a running or paused VM, and %s is %s"
                                 % (self.name, obs.state), option='state')
        elif obs.live:
            self.plan_live(obs, spec, config, target, state, plan)
        elif target in ('running', 'paused'):
            if obs.state == 'created':
                plan.add(None, self.vmm.stop)  # a fresh VMM takes the new config
            plan.add('start the VM', lambda: self._start(spec, config, paused=(target == 'paused')))
            self._boots = True
        new_record['run_state'] = target
        if self._boots:
            # CH's ceiling for live RAM growth is set at boot and not echoed once RAM has grown
            memory = config['memory']
            new_record['ram_ceiling'] = memory['size'] + (memory.get('hotplug_size') or 0)
        record_changed = _strip(new_record) != _strip(obs.record or {})
        if record_changed and not plan.changes:
            plan.add('update the record')
        if not self.check_mode:
            new_dir = not os.path.isdir(self.vm_dir)
            self.layout.ensure_dirs(self.name)
            # The record is written first: a run killed half-way is converged by the next one.
            self.layout.write_record(self.name, dict(new_record, managed_files=record['managed_files']))
            _unlink_quiet(self.managed_list_path())
            try:
                for step in plan.steps:
                    step()
            except CloudHVError:
                if obs.record is None:
                    self._rollback_new(new_dir, record['managed_files'])
                raise
        new_pid = self.vmm.pid() if not self.check_mode else (obs.pid if obs.live else None)
        info = None
        if not self.check_mode and new_pid is not None:
            if plan.steps or obs.info is None:
                try:
                    info = self.vmm.client().info()
                except (ChApiError, VmmNotReachable):
                    info = None
            else:
                info = obs.info
        elif self.check_mode:
            info = obs.info
        final_record = dict(new_record, managed_files=record['managed_files'])
        after = {'state': target, 'spec': self.public_spec(spec)}
        return self._result(plan, before, after, self.vm_result(target, final_record, info, new_pid))

    def _plan_leftovers(self, obs, spec, plan):
        """No VMM runs and none should: remove what a crashed VMM or an interrupted stop left
        behind (socket, pid file, the VM's taps), so that a stopped VM holds nothing on the host."""
        if obs.state != 'crashed' and (os.path.lexists(self.vmm.socket_path) or os.path.lexists(self.vmm.pid_file)):
            plan.add('remove the stale socket and pid file', self.vmm.cleanup)
        recorded = ((obs.record or {}).get('spec') or {}).get('networks') or []
        names = self._managed_taps(spec) + [n['tap'] for n in recorded if n.get('managed_tap')]
        present = [t for t in sorted(set(names)) if self.netlink().link(t) is not None]
        if present:
            plan.add('remove the stale taps %s' % ', '.join(present), lambda: self._remove_taps(present))

    def _snapshot_pre_steps(self, obs, state, plan):
        """Before planning (snapshot.py): repair an interrupted snapshot, create a clone, or leave
        standby. Done at once outside check mode (the plan then starts from what is really there);
        in check mode the plan gets the changes and a prediction of the VM they would leave."""
        marker = read_marker(self.layout, self.name) if obs.record else None
        if marker and marker.get('op') == 'clone':
            changes, live = _snapmod().finish_clone(self, marker, obs.record.get('run_state') or 'running',
                                                    check_mode=self.check_mode)
            plan.changes.extend(changes)
            if not self.check_mode:
                obs = self.observe()
            else:
                obs = Observed(obs.record, obs.pid, dict(obs.info or {}, config=obs.record.get('config'),
                                                         state=live.capitalize()), live)
        elif marker:
            changes, resumed = _snapmod().repair(self.layout, self.name, self.vmm, check_mode=self.check_mode)
            plan.changes.extend(changes)
            if not self.check_mode:
                obs = self.observe()
            elif resumed and obs.state == 'paused':
                obs = Observed(obs.record, obs.pid, dict(obs.info or {}, state='Running'), 'running')
        paused = state == 'paused' or state in ('stopped', 'standby')
        if obs.state == 'absent' and self.clone:
            plan.changes.extend(self.clone.describe())
            if not self.check_mode:
                self.clone.run(paused=paused)
                return self.observe()
            record, info = self.clone.predicted(paused)
            return Observed(record, None, info, 'paused' if paused else 'running')
        if obs.state == 'standby' and state in ('running', 'paused'):
            path = _snapmod().standby_path(self.layout, self.name)
            _snapmod().verify(path, _snapmod().standby_manifest(self.layout, self.name) or {}, self.params['binary'],
                              option='state')
            _snapmod().check_standby_disks(self.layout, self.name, (obs.record or {}).get('spec') or {})
            plan.changes.append('bring the VM back from standby (restore %s in a new VMM)' % path)
            if not self.check_mode:
                _snapmod().wake(self, paused=(state == 'paused'))
                return self.observe()
            with open(os.path.join(path, 'config.json')) as handle:
                info = {'config': json.load(handle), 'state': 'Paused' if state == 'paused' else 'Running'}
            return Observed(obs.record, None, info, 'paused' if state == 'paused' else 'running')
        if obs.state == 'standby' and state in ('stopped', 'restarted'):
            path = _snapmod().standby_path(self.layout, self.name)
            plan.changes.append('discard the standby state in %s' % path)
            if not self.check_mode:
                shutil.rmtree(path, ignore_errors=True)
            return Observed(obs.record, None, None, 'stopped')
        return obs

    def _rollback_new(self, new_dir, created):
        """A new VM failed to come up (e.g. CH refused its config): leave nothing behind."""
        _unlink_quiet(self.layout.record_path(self.name))
        for path in created:
            _unlink_quiet(path)
        if new_dir:
            shutil.rmtree(self.vm_dir, ignore_errors=True)

    # -- planning ---------------------------------------------------------------------------
    def plan_files(self, spec, cloud, record, plan):
        managed = record.setdefault('managed_files', [])
        for index, disk in enumerate(spec['disks']):
            if os.path.exists(disk['path']) or (self.clone and disk['path'] in self.clone.files):
                continue
            opt = 'disks[%d]' % index
            if disk['backing_file']:
                plan.add('create qcow2 overlay %s on %s' % (disk['path'], disk['backing_file']),
                         lambda d=disk, o=opt: self._create_overlay(d, o))
            else:
                plan.add('create sparse raw image %s (%s)' % (disk['path'], specmod.human_size(disk['size'])),
                         lambda d=disk, o=opt: self._create_raw(d, o))
            managed.append(disk['path'])
        if cloud:
            path = self.cidata_path()
            old = ((record.get('spec') or {}).get('cloud_init') or {}).get('digest')
            if old != cloud['digest'] or not os.path.exists(path):
                plan.add('build the cloud-init image %s' % path, lambda: self._build_iso(cloud))
                if path not in managed:
                    managed.append(path)

    def _create_raw(self, disk, option):
        from ansible_collections.cloudhv.ch.plugins.module_utils import images
        ensure_dir(os.path.dirname(disk['path'])) if disk['path'].startswith(self.vm_dir) else None
        images.create_raw(disk['path'], disk['size'], option='%s.size' % option)

    def _create_overlay(self, disk, option):
        from ansible_collections.cloudhv.ch.plugins.module_utils import images
        ensure_dir(os.path.dirname(disk['path'])) if disk['path'].startswith(self.vm_dir) else None
        images.create_overlay(disk['path'], disk['backing_file'], option='%s.backing_file' % option)

    def _build_iso(self, cloud):
        from ansible_collections.cloudhv.ch.plugins.module_utils import cloudinit
        cloudinit.build_iso(self.cidata_path(), cloud['files'])

    def check_capacity(self, spec, plan):
        from ansible_collections.cloudhv.ch.plugins.module_utils.hostinfo import meminfo
        mem = meminfo()
        need = spec['memory']
        if spec['hugepages']:
            page = mem.get('hugepage_size_bytes') or 0
            free = (mem.get('hugepages_free') or 0) * page
            if free < need:
                raise HostError("hugepages: the VM needs %s of hugepages but only %s are free "
                                "(%s pages of %s); allocate more in /proc/sys/vm/nr_hugepages"
                                % (specmod.human_size(need), specmod.human_size(free),
                                   mem.get('hugepages_free'), specmod.human_size(page)),
                                option='hugepages')
        elif mem.get('available_bytes') and need > mem['available_bytes']:
            plan.warnings.append("memory: the VM's %s exceed the host's available memory (%s): "
                                 "the host is over-committed"
                                 % (specmod.human_size(need), specmod.human_size(mem['available_bytes'])))
        cpus = os.cpu_count() or 1
        if spec['cpus'] > cpus:
            plan.warnings.append("cpus: the VM's %d vCPUs exceed the host's %d CPUs" % (spec['cpus'], cpus))

    def plan_live(self, obs, spec, config, target, state, plan):
        """A live VM: run-state changes, then live config changes (or restart_required)."""
        apply = self.params.get('apply_changes') or 'live'
        live_cfg = (obs.info or {}).get('config') or {}
        self._ram_ceiling = (obs.record or {}).get('ram_ceiling')
        live_ops, restart_paths = self.live_diff(config, live_cfg, spec, obs.info or {})
        needs_restart = bool(restart_paths)
        if state == 'restarted':
            if needs_restart or (live_ops and apply != 'never'):
                plan.add('restart the VM (stop and start) to apply %s' % ', '.join(restart_paths + [o[0] for o in live_ops]),
                         lambda: self._restart(spec, config))
                self._boots = True
            else:
                plan.add('reboot the VM', lambda: self.vmm.client().reboot())
            return
        if needs_restart and apply == 'restart':
            plan.add('restart the VM to apply %s' % ', '.join(restart_paths),
                     lambda: self._restart(spec, config, paused=(target == 'paused')))
            self._boots = True
            return
        if obs.state == 'paused' and target == 'running':
            plan.add('resume the VM', lambda: self.vmm.client().resume())
        if target == 'stopped':
            plan.add('stop the VM', lambda: self._stop(spec))
            return
        # Live changes need a running guest; a VM that stays paused gets them at its next restart.
        live_ok = apply != 'never' and (obs.state == 'running' or target == 'running')
        if live_ops and live_ok:
            for change, step in live_ops:
                plan.add(change, step)
        elif live_ops:
            plan.restart_required = True
        if needs_restart:
            # The record carries the change; the restart itself is the user's call.
            plan.restart_required = True
        if obs.state == 'running' and target == 'paused':
            plan.add('pause the VM', lambda: self.vmm.client().pause())

    def live_diff(self, config, live, spec, info):
        """([(change, step)], [paths needing a restart]) between desired config and live echo."""
        ops = []
        restart = []
        client = self.vmm.client
        rest_desired = copy.deepcopy(config)
        rest_live = copy.deepcopy(live)
        # vCPUs
        want_cpus = config['cpus']['boot_vcpus']
        have_cpus = (live.get('cpus') or {}).get('boot_vcpus')
        max_live = (live.get('cpus') or {}).get('max_vcpus')
        if want_cpus != have_cpus:
            if max_live is not None and want_cpus <= max_live and config['cpus']['max_vcpus'] == max_live:
                ops.append(('resize vCPUs %s -> %s' % (have_cpus, want_cpus),
                            lambda: client().resize(desired_vcpus=want_cpus)))
            else:
                restart.append('cpus')
        rest_desired['cpus'].pop('boot_vcpus', None)
        # RAM
        lmem = live.get('memory') or {}
        have_ram = (lmem.get('size') or 0) + (lmem.get('hotplugged_size') or 0)
        want_ram = config['memory']['size']
        if want_ram != have_ram:
            # CH v53.0 grows RAM by ACPI DIMMs of a multiple of 128 MiB, up to the RAM it booted
            # with plus hotplug_size; it writes the new size to memory.size, so after a growth the
            # echo no longer shows the boot size: the ceiling recorded at boot bounds it. ACPI RAM
            # never shrinks (CH accepts a smaller size and only rewrites its config): a restart.
            ceiling = (lmem.get('size') or 0) + (lmem.get('hotplug_size') or 0)
            if self._ram_ceiling:
                ceiling = min(ceiling, self._ram_ceiling)
            if have_ram < want_ram <= ceiling and (want_ram - have_ram) % specmod.ACPI_DIMM == 0 and \
                    config['memory'].get('hotplug_size', 0) == (lmem.get('hotplug_size') or 0):
                ops.append(('resize RAM %s -> %s' % (specmod.human_size(have_ram), specmod.human_size(want_ram)),
                            lambda: client().resize(desired_ram=want_ram)))
            else:
                restart.append('memory')
        rest_desired['memory'].pop('size', None)
        # balloon
        if config.get('balloon') and live.get('balloon'):
            want_b = config['balloon']['size']
            have_b = live['balloon'].get('size')
            if want_b != have_b:
                ops.append(('resize balloon %s -> %s' % (specmod.human_size(have_b or 0), specmod.human_size(want_b)),
                            lambda: client().resize(desired_balloon=want_b)))
            rest_desired['balloon'].pop('size', None)
        # disks and NICs: hot-add / hot-remove by id
        for key, add, kind in (('disks', 'add_disk', 'disk'), ('net', 'add_net', 'NIC')):
            want = dict((d['id'], d) for d in config.get(key) or [])
            have = dict((d.get('id'), d) for d in live.get(key) or [])
            nets = dict((n['id'], n) for n in spec['networks'])
            for dev_id, dev in want.items():
                if dev_id in have and not specmod.subset_diff(dev, have[dev_id]):
                    continue
                if dev_id in have:
                    ops.append(('remove %s %s (changed)' % (kind, dev_id),
                                lambda i=dev_id: client().remove_device(i)))
                if key == 'net':
                    ops.append(('hot-add NIC %s (tap %s)' % (dev_id, dev['tap']),
                                lambda d=dev, n=nets.get(dev_id): self._hot_add_net(d, n)))
                else:
                    ops.append(('hot-add disk %s (%s)' % (dev_id, dev['path']),
                                lambda d=dev, a=add: getattr(client(), a)(d)))
            for dev_id in have:
                if dev_id not in want:
                    tap = have[dev_id].get('tap') if key == 'net' else None
                    ops.append(('hot-remove %s %s' % (kind, dev_id),
                                lambda i=dev_id, t=tap: self._hot_remove(i, t)))
            rest_desired.pop(key, None)
        restart.extend(specmod.subset_diff(rest_desired, rest_live))
        return ops, restart

    # -- actions ----------------------------------------------------------------------------
    def _ensure_taps(self, spec):
        for net in spec['networks']:
            if net['managed_tap']:
                self.netlink().ensure_tap(net['tap'], net['bridge'],
                                          multi_queue=(net.get('num_queues') or 2) > 2, mtu=net.get('mtu'))

    def _remove_taps(self, taps):
        for tap in taps:
            self.netlink().delete_link(tap)

    def _managed_taps(self, spec):
        return [n['tap'] for n in spec['networks'] if n['managed_tap']]

    def _hot_add_net(self, cfg, net):
        if net and net['managed_tap']:
            self.netlink().ensure_tap(net['tap'], net['bridge'],
                                      multi_queue=(net.get('num_queues') or 2) > 2, mtu=net.get('mtu'))
        self.vmm.client().add_net(cfg)

    def _hot_remove(self, dev_id, tap):
        self.vmm.client().remove_device(dev_id)
        if tap and tap.startswith(specmod.TAP_PREFIX):
            self.netlink().delete_link(tap)

    def _start(self, spec, config, paused=False):
        self.layout.ensure_dirs(self.name)
        self._ensure_taps(spec)
        try:
            self.launch_vmm()
            client = self.vmm.client()
            client.create(config)
            client.boot()
            if paused:
                client.pause()
        except CloudHVError:
            # never leave a half-started VMM or its taps behind
            try:
                self.vmm.stop(timeout=0, force=True)
            finally:
                self._remove_taps(self._managed_taps(spec))
            raise

    def _stop(self, spec):
        self.vmm.stop(timeout=self.params.get('stop_timeout', 30), force=self.params.get('force'))
        self._remove_taps([t for t in self._managed_taps(spec) if self.netlink().link(t) is not None])

    def _restart(self, spec, config, paused=False):
        self._stop(spec)
        self._start(spec, config, paused=paused)


def is_bridge(name):
    """True when sysfs shows ``name`` as a bridge of this process's network namespace; False when
    it cannot tell (the caller then asks netlink). Every run checks its bridges, and a no-change
    run must not pay for importing pyroute2 and opening a netlink socket. /sys/class/net shows the
    namespace sysfs was mounted in, which need not be ours: the link's ifindex there must be the
    one this namespace gives the name."""
    try:
        index = socket.if_nametoindex(name)
    except (OSError, ValueError):
        return False
    base = os.path.join('/sys/class/net', name)
    return (read_text(os.path.join(base, 'ifindex')) or '').strip() == str(index) and \
        os.path.isdir(os.path.join(base, 'bridge'))


def _strip(record):
    return dict((k, v) for k, v in (record or {}).items() if k not in ('record_version', 'name', 'managed_files'))


def _unlink_quiet(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def vm_infos(layout, binary=None, name=None):
    """ch_vm_info: every recorded VM (or one), with its observed state."""
    names = [check_name(name)] if name else layout.list_vms()
    out = []
    for vm in names:
        try:
            record = layout.read_record(vm)
        except RecordUnreadable as exc:     # that VM only: the others are listed as usual
            out.append({'name': vm, 'state': 'unknown', 'error': str(exc)})
            continue
        if record is None:
            continue
        mgr = VmManager({'name': vm, 'state_dir': layout.state_dir, 'run_dir': layout.run_dir,
                         'binary': record.get('binary') or binary}, check_mode=True, host='-')
        try:
            obs = mgr.observe()
        except (StateError, ChApiError) as exc:
            out.append({'name': vm, 'state': 'unknown', 'error': str(exc)})
            continue
        finally:
            mgr.close()
        state = obs.state if obs.state != 'created' else 'stopped'
        result = mgr.vm_result(state, record, obs.info, obs.pid)
        result['spec'] = VmManager.public_spec(record.get('spec'))
        result['snapshots'] = _snapmod().list_snapshots(layout, vm)
        result['api_socket'] = layout.socket_path(vm)
        out.append(result)
    return out
