# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ch_vm's converger: one VM from its options to the host, in phases.

1. validate: the options (spec.normalize), the files and bridges they name; nothing touched yet;
2. lock the VM (store.VmLock) and observe it (vm.Vm.observe);
3. recover: finish or undo what a killed run left (recovery.recover);
4. identity: create a clone, wake from standby, or discard a standby state;
5. plan: gather the host facts the planner needs, then vm_plan (pure) gives the steps;
6. write the record, then run the steps (vm_executor), then report.

Check mode runs the same phases and predicts 3 and 4 instead of doing them. ``converge_vm`` is
the one entry point ch_vm (and ch_vms, per VM) calls. No Ansible imports here.
"""

from __future__ import annotations

import copy
import os
import socket

from ansible_collections.cloudhv.ch.plugins.module_utils import dhcp
from ansible_collections.cloudhv.ch.plugins.module_utils import recovery
from ansible_collections.cloudhv.ch.plugins.module_utils import spec as specmod
from ansible_collections.cloudhv.ch.plugins.module_utils import vm_record
from ansible_collections.cloudhv.ch.plugins.module_utils import vm_plan
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import (
    ChApiError,
    CloudHVError,
    HostError,
    OptionError,
    RecordUnreadable,
    VmmNotReachable,
)
from ansible_collections.cloudhv.ch.plugins.module_utils.fsutil import rmtree_quiet, unlink_quiet
from ansible_collections.cloudhv.ch.plugins.module_utils.store import Layout, VmLock, read_json, read_text
from ansible_collections.cloudhv.ch.plugins.module_utils.vm import Observed, Vm, public_spec

# NIC indexes whose derived tap names state=absent force=true looks for when the record is unreadable
MAX_NICS = 64


def converge_vm(params, check_mode=False, lock_timeout=60.0):
    """ch_vm's whole run for one VM (``params`` are ch_vm's validated module parameters): the VM
    converged to ``params['state']``, then its autostart unit. The one entry point that ch_vm and
    ch_vms share; returns the module result, with ``warnings`` (a list) and ``diff``."""
    from ansible_collections.cloudhv.ch.plugins.module_utils import autostart
    wants_unit = _check_autostart(params)
    engine = VmEngine(params, check_mode=check_mode, lock_timeout=lock_timeout)
    result = engine.converge(params['state'])
    unit_changes = autostart.converge(
        params['name'], wants_unit, engine.vm.vm_dir, config=result['vm'].get('config'),
        unit_args=_unit_args(params, engine.vm.vmm.socket_path, result), check_mode=check_mode)
    if unit_changes:
        result['changes'] = result['changes'] + unit_changes
        result['changed'] = True
    return result


def validate_vm(params):
    """Raise what ``converge_vm(params)`` raises as bad input before it touches the host, touching
    nothing (ch_vms checks every item with it before it converges any)."""
    _check_autostart(params)
    engine = VmEngine(params, check_mode=True)
    try:
        engine.validate(params['state'])
    finally:
        engine.vm.close()


def _check_autostart(params):
    """True when the VM wants its autostart unit; HostError when this host cannot have one."""
    from ansible_collections.cloudhv.ch.plugins.module_utils import autostart
    wants_unit = bool(params.get('autostart')) and params['state'] != 'absent'
    if wants_unit and autostart.pid1_name() != 'systemd':
        raise HostError("autostart: needs systemd as PID 1, and this host runs %s; set autostart: false"
                        % autostart.pid1_name(), option='autostart')
    return wants_unit


def _unit_args(params, socket_path, result):
    nets = dict((n.get('id'), n) for n in (result['vm'].get('config') or {}).get('net') or [])
    taps = [{'tap': n['tap'], 'bridge': n['bridge'], 'multi_queue': specmod.multi_queue(nets.get(n['id'], {}))}
            for n in result['vm'].get('networks') or [] if n.get('bridge')]
    return {'binary': params['binary'],
            'ch_remote': os.path.join(os.path.dirname(params['binary']), 'ch-remote'),
            'socket_path': socket_path, 'taps': taps, 'stop_timeout': params.get('stop_timeout', 30)}


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


class VmEngine:
    """Converges one VM. ``params`` are ch_vm's module parameters."""

    def __init__(self, params, check_mode=False, host=None, lock_timeout=60.0):
        self.params = params
        self.check_mode = check_mode
        self.lock_timeout = lock_timeout
        self.layout = Layout(params['state_dir'], params['run_dir'])
        self.vm = Vm(self.layout, params['name'], params['binary'], api_timeout=params.get('api_timeout'),
                     launcher=params.get('launcher') or 'auto', host=host)
        self.name = self.vm.name
        self.clone = None         # clone.Clone when this run creates the VM from clone_from

    # -- phase 1: validation ------------------------------------------------------------------
    def desired(self, record):
        """Normalized spec, cloud-init rendering and the VmConfig, all validated."""
        base = record or (self.clone.record if self.clone else None)
        # options the task leaves unset keep the record's (a clone's: its source's) values
        spec = specmod.normalize(self.params, self.vm.vm_dir, self.vm.host, base)
        if spec['payload'] is None:
            raise OptionError('firmware', "a new VM needs exactly one of firmware or kernel")
        cloud = None
        ci = self.params.get('cloud_init')
        if ci and any(v is not None for v in ci.values()):
            from ansible_collections.cloudhv.ch.plugins.module_utils import cloudinit
            cloud = cloudinit.render(self.name, ci.get('user_data'), ci.get('meta_data'), ci.get('network_config'))
            spec['cloud_init'] = {'digest': cloud['digest'], 'instance_id': cloud['instance_id'],
                                  'hostname': cloud['hostname']}
        elif ci is None:    # unset: the recorded one stays (cloud_init: {} removes it)
            spec['cloud_init'] = copy.deepcopy(((base or {}).get('spec') or {}).get('cloud_init'))
        else:
            spec['cloud_init'] = None
        return spec, cloud, self.vm.build_config(spec)

    def check_host_inputs(self, spec, starting):
        """Files and bridges the spec refers to must exist: fail before touching anything."""
        payload = spec['payload'] or {}
        for key in ('firmware', 'kernel', 'initramfs'):
            if payload.get(key) and not os.path.isfile(payload[key]):
                raise OptionError(key, "%s does not exist or is not a file" % payload[key])
        for index, disk in enumerate(spec['disks']):
            self._check_disk(disk, 'disks[%d]' % index)
        for index, dev in enumerate(spec['devices']):
            if not os.path.exists(dev):
                raise OptionError('devices[%d]' % index, "%s does not exist" % dev)
        for index, net in enumerate(spec['networks']):
            if net['bridge'] and not is_bridge(net['bridge']) and not self.vm.netlink().bridge_exists(net['bridge']):
                raise OptionError('networks[%d].bridge' % index, "bridge %s does not exist "
                                  "(create it first, e.g. with cloudhv.ch.ch_network)" % net['bridge'])
        for index, net in enumerate(spec['networks']):
            if net['user_tap'] and starting and self.vm.netlink().link(net['user_tap']) is None:
                raise OptionError('networks[%d].tap' % index, "tap %s does not exist" % net['user_tap'])

    def _check_disk(self, disk, opt):
        if self.clone and disk['path'] in self.clone.files:
            return
        if os.path.exists(disk['path']):
            if os.path.isdir(disk['path']):
                raise OptionError('%s.path' % opt, "%s is a directory" % disk['path'])
            # A format guessed from the file name must not contradict the file's header (Ubuntu's
            # cloud '.img' files are qcow2): CH would read it as raw and the guest would not boot.
            found = None if disk.get('image_type_explicit') else specmod.sniff_image_type(disk['path'])
            if found and found != disk['image_type']:
                raise OptionError('%s.image_type' % opt, "%s looks like a %s image but its name suggests %s: "
                                  "set image_type explicitly (for example image_type: %s)"
                                  % (disk['path'], found, disk['image_type'], found))
            return
        if disk['backing_file']:
            if not os.path.isfile(disk['backing_file']):
                raise OptionError('%s.backing_file' % opt, "base image %s does not exist" % disk['backing_file'])
        elif disk['size'] is None:
            raise OptionError('%s.path' % opt, "%s does not exist; give size to create a sparse raw image, "
                              "or backing_file to create a qcow2 overlay" % disk['path'])
        parent = os.path.dirname(disk['path'])
        if not os.path.isdir(parent) and not parent.startswith(self.vm.vm_dir):
            raise OptionError('%s.path' % opt, "directory %s does not exist" % parent)

    # -- the run ------------------------------------------------------------------------------
    def converge(self, state):
        # Validate everything before the lock: bad input must not even create the lock file.
        self.validate(state)
        if state == 'absent':
            return self._locked(self._converge_absent)
        return self._locked(lambda: self._converge_present(state))

    def validate(self, state):
        """Phase 1: every check of the options and of what they name on the host; reads only."""
        self.layout.check_socket_path(self.name)
        if state == 'absent':
            return
        record = self.vm.record()
        if record is None and self.params.get('clone_from'):
            from ansible_collections.cloudhv.ch.plugins.module_utils.clone import Clone
            self.clone = Clone(self.vm, self.params['clone_from'], lock_timeout=self.lock_timeout)
        if state == 'standby' and record is None and not self.clone:
            raise OptionError('state', "standby keeps the state of a running VM; %s does not exist" % self.name)
        spec = self.desired(record)[0]
        dhcp.check_vm_addresses(self.layout, self.name, spec['networks'])
        # a user tap must exist for a VM that will run (checked again once the state is known)
        self.check_host_inputs(spec, starting=state in ('running', 'paused', 'restarted'))

    def _locked(self, func):
        try:
            if self.check_mode:
                return func()
            self.layout.ensure_dirs()
            with VmLock(self.layout, self.name, timeout=self.lock_timeout):
                return func()
        finally:
            self.vm.close()

    def _observe(self):
        return self.vm.observe(use_recorded_launcher=not self.params.get('launcher'))

    def _result(self, plan, changes, before, after, vm, warnings=()):
        changes = list(changes) + plan.changes
        return {
            'changed': bool(changes),
            'changes': changes,
            'restart_required': plan.restart_required,
            'diff': {'before': before, 'after': after},
            'vm': vm,
            'warnings': list(plan.warnings) + list(warnings),
        }

    def _execute(self, plan):
        if not plan.steps:
            return
        from ansible_collections.cloudhv.ch.plugins.module_utils import vm_executor
        vm_executor.execute(self.vm, plan, stop_timeout=self.params.get('stop_timeout', 30),
                            force=self.params.get('force'))

    # -- present ------------------------------------------------------------------------------
    def _converge_present(self, state):
        obs = self._observe()
        before = {'state': obs.state, 'spec': public_spec(obs.spec)}
        changes, obs = recovery.recover(self.vm, obs, check_mode=self.check_mode, cloning=self.clone is not None)
        more, obs = self._identity(obs, state)
        changes += more
        spec, cloud, config = self.desired(obs.record)
        target = vm_plan.target_state(obs.state, state)
        self.check_host_inputs(spec, target in ('running', 'paused') and not obs.live)
        plan = vm_plan.plan_present(obs, spec, config, cloud, state, self._facts(obs, spec, cloud, target),
                                    binary=self.params['binary'], launcher=self.vm.vmm.launcher,
                                    apply_changes=self.params.get('apply_changes'), earlier=changes)
        if not self.check_mode:
            new_dir = not os.path.isdir(self.vm.vm_dir)
            self.layout.ensure_dirs(self.name)
            # The record is written first: a run killed half-way is converged by the next one.
            self.vm.write_record(plan.record)
            unlink_quiet(self.vm.managed_list_path())
            try:
                self._execute(plan)
            except CloudHVError:
                if obs.record is None:
                    self._rollback_new(new_dir, plan.record['managed_files'])
                raise
        pid, info = self._after(obs, plan)
        after = {'state': plan.target, 'spec': public_spec(spec)}
        return self._result(plan, changes, before, after, self.vm.result(plan.target, plan.record, info, pid))

    def _after(self, obs, plan):
        """(pid, vm.info) of the VM once the plan ran (predicted in check mode)."""
        if self.check_mode:
            return (obs.pid if obs.live else None), obs.info
        pid = self.vm.vmm.pid()
        if pid is None:
            return None, None
        if not plan.steps and obs.info is not None:
            return pid, obs.info
        try:
            return pid, self.vm.client().info()
        except (ChApiError, VmmNotReachable):
            return pid, None

    def _leftover_managed(self):
        """The existing files a removal without purge left listed in managed.json."""
        left = read_json(self.vm.managed_list_path()) or {}
        return [p for p in left.get('managed_files', []) if os.path.exists(p)]

    def _facts(self, obs, spec, cloud, target):
        """What the planner needs to know about the host (reads only)."""
        vm = self.vm
        facts = {'name': self.name, 'cidata_path': vm.cidata_path(),
                 'standby_path': os.path.join(vm.vm_dir, 'standby')}
        clone_files = self.clone.files if self.clone else ()
        facts['missing_disks'] = [(i, d) for i, d in enumerate(spec['disks'])
                                  if not os.path.exists(d['path']) and d['path'] not in clone_files]
        if cloud:
            facts['cidata_exists'] = os.path.exists(vm.cidata_path())
        old_networks = (obs.spec.get('networks') or [])
        if spec['networks'] or old_networks:
            facts['dhcp_hosts'] = dhcp.vm_nic_changes(self.layout, self.name, spec['networks'], old_networks)
        if obs.record is None:
            facts['leftover_managed'] = self._leftover_managed()
        if obs.state in ('crashed', 'stopped') and target == 'stopped':
            facts['stale_run_files'] = os.path.lexists(vm.vmm.socket_path) or os.path.lexists(vm.vmm.pid_file)
            facts['stale_taps'] = vm.present_taps(vm.managed_taps(spec) + vm_record.managed_taps(obs.record))
        if target in ('running', 'paused') and not obs.live:
            from ansible_collections.cloudhv.ch.plugins.module_utils.hostinfo import meminfo
            facts['meminfo'] = meminfo()
            facts['host_cpus'] = os.cpu_count() or 1
        return facts

    def _identity(self, obs, state):
        """Phase 4: create a clone, wake from standby or discard a standby state. Done at once
        outside check mode (the plan then starts from what is really there); in check mode the
        changes and a prediction of the VM they would leave."""
        if obs.state == 'absent' and self.clone:
            paused = state in ('paused', 'stopped', 'standby')
            changes = self.clone.describe()
            if not self.check_mode:
                self.clone.run(paused=paused)
                return changes, self._observe()
            record, info = self.clone.predicted(paused)
            return changes, Observed(record, None, info, 'paused' if paused else 'running')
        if obs.state != 'standby':
            return [], obs
        from ansible_collections.cloudhv.ch.plugins.module_utils import standby
        if state in ('running', 'paused'):
            standby.check_wake(self.vm, obs.spec, self.params['binary'])
            changes = ['bring the VM back from standby (restore %s in a new VMM)' % standby.path(self.vm)]
            if not self.check_mode:
                standby.wake(self.vm, paused=(state == 'paused'))
                return changes, self._observe()
            return changes, obs.predicted(state, config=standby.saved_config(self.vm))
        if state in ('stopped', 'restarted'):
            changes = ['discard the standby state in %s' % standby.path(self.vm)]
            if not self.check_mode:
                standby.discard(self.vm)
            return changes, Observed(obs.record, None, None, 'stopped')
        return [], obs

    def _rollback_new(self, new_dir, created):
        """A new VM failed to come up (e.g. CH refused its config): leave nothing behind."""
        unlink_quiet(self.layout.record_path(self.name))
        for path in created:
            unlink_quiet(path)
        if new_dir:
            rmtree_quiet(self.vm.vm_dir)

    # -- absent -------------------------------------------------------------------------------
    def _converge_absent(self):
        try:
            self.vm.record()
        except RecordUnreadable as exc:
            if not self.params.get('force'):
                raise
            return self._remove_unreadable(exc)
        purge = self.params.get('purge')
        if purge and os.path.isdir(self.vm.vm_dir):
            from ansible_collections.cloudhv.ch.plugins.module_utils.snapshot_store import linked_clones
            users = linked_clones(self.layout, self.vm.vm_dir, exclude=self.name)
            if users:
                raise OptionError('purge', "the snapshots of %s are the base of the disks of %s (cloned with "
                                  "clone_from.disks=overlay); remove %s first, or remove %s without purge"
                                  % (self.name, ', '.join(users), 'them' if len(users) > 1 else 'it', self.name))
        obs = self._observe()
        changes = []
        if recovery.read_marker(self.vm):
            changes = recovery.for_removal(self.vm, check_mode=self.check_mode)
            if not self.check_mode:
                obs = self._observe()
        before = {'state': obs.state, 'spec': public_spec(obs.spec)}
        networks = obs.spec.get('networks') or []
        files, leases = dhcp.vm_removal(self.layout, self.name, networks) if networks else ({}, [])
        facts = {'stale_run_files': os.path.exists(self.vm.vmm.socket_path) or os.path.exists(self.vm.vmm.pid_file),
                 'present_taps': self.vm.present_taps(vm_record.managed_taps(obs.record)),
                 'dhcp_files': files, 'dhcp_leases': leases,
                 'vm_dir': self.vm.vm_dir, 'vm_dir_exists': os.path.isdir(self.vm.vm_dir)}
        if purge and obs.record is None:
            facts['leftover_managed'] = self._leftover_managed()
        plan = vm_plan.plan_absent(obs, facts, purge)
        plan.spec = obs.spec
        if not self.check_mode:
            self._execute(plan)
            unlink_quiet(self.layout.lock_path(self.name))
        return self._result(plan, changes, before, {'state': 'absent', 'spec': {}}, {'name': self.name, 'state': 'absent'})

    def _remove_unreadable(self, exc):
        """state=absent force=true for a VM whose record cannot be used: remove what is known
        without it. Its VMM is found through the pid file and the socket (whatever the binary) and
        stopped; its taps are the names the collection derives for this VM (and a live VMM's NICs);
        then its run files and the record go. No disk is touched, wherever it is."""
        vm = self.vm
        plan = vm_plan.Plan()
        plan.warnings.append("%s: the record could not be used (%s); removed with force=true, its disks kept"
                             % (self.name, exc.details.get('problem') or exc.msg))
        vm.vmm.binary = None          # unknown without the record
        pid = vm.vmm.pid()
        taps = set(specmod.tap_name(vm.host, self.name, index) for index in range(MAX_NICS))
        if pid is not None:
            try:
                taps.update(n.get('tap') for n in ((vm.client().info() or {}).get('config') or {}).get('net') or [])
            except (ChApiError, VmmNotReachable):
                pass
            plan.add('stop the VMM (pid %d)' % pid, vm_plan.Step('stop_vmm', kill=True))
        elif os.path.lexists(vm.vmm.socket_path) or os.path.lexists(vm.vmm.pid_file):
            plan.add('remove the stale socket and pid file', vm_plan.Step('cleanup_vmm'))
        present = sorted(link['name'] for link in vm.netlink().links()
                         if link['name'] in taps and link['name'].startswith(specmod.TAP_PREFIX))
        if present:
            plan.add('remove taps %s' % ', '.join(present), vm_plan.Step('remove_taps', taps=present))
        sockets = [p for p in vm.console_sockets() if os.path.lexists(p)]
        if sockets:
            plan.add('remove %s' % ', '.join(sockets), vm_plan.Step('remove_files', paths=sockets))
        plan.add('remove the unreadable record %s' % self.layout.record_path(self.name),
                 vm_plan.Step('remove_files', paths=[self.layout.record_path(self.name)]))
        if self.params.get('purge'):
            plan.warnings.append("purge: skipped for %s: without a readable record nothing tells its own files "
                                 "from the user's; %s stays, remove what is no longer needed by hand"
                                 % (self.name, vm.vm_dir))
        if not self.check_mode:
            self._execute(plan)
            unlink_quiet(self.layout.lock_path(self.name))
        return self._result(plan, [], {'state': 'unknown', 'spec': {}}, {'state': 'absent', 'spec': {}},
                            {'name': self.name, 'state': 'absent'})
