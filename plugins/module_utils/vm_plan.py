# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ch_vm's planner: what is observed plus what is desired gives the steps. Pure functions: no
I/O, no clock, nothing touched. The facts the plan needs from the host (which disks are missing,
which taps exist, the DHCP entries to write) are gathered beforehand by vm_engine.py; the steps
are data (``Step``) that vm_executor.py runs. Check mode and a real run share every line here.
"""

from __future__ import annotations

import copy

from ansible_collections.cloudhv.ch.plugins.module_utils import spec as specmod
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import HostError, StateError

# Parts of the VmConfig the planner changes on a live VM (everything else needs a restart).
LIVE_PATHS = ('cpus.boot_vcpus', 'memory.size', 'balloon.size', 'disks', 'net')
# Devices ch_vm can remove that CH cannot remove live: their removal needs a restart.
REMOVABLE = ('balloon', 'vsock', 'platform', 'devices')


class Step:
    """One thing to do: ``action`` (a verb vm_executor knows) and its arguments."""

    def __init__(self, action, **args):
        self.action = action
        self.args = args

    def __eq__(self, other):
        return isinstance(other, Step) and (self.action, self.args) == (other.action, other.args)

    def __repr__(self):
        return 'Step(%r, %s)' % (self.action, ', '.join('%s=%r' % kv for kv in sorted(self.args.items())))


class Plan:
    """Human-readable changes, the steps that make them, and the record the run leaves."""

    def __init__(self, spec=None, config=None, cloud=None):
        self.spec = spec
        self.config = config
        self.cloud = cloud
        self.changes = []
        self.steps = []
        self.restart_required = False
        self.warnings = []
        self.record = None
        self.target = None

    def add(self, change, step=None):
        if change:
            self.changes.append(change)
        if step is not None:
            self.steps.append(step)

    @property
    def boots(self):
        """True when the plan (re)starts the VMM with the desired config."""
        return any(s.action in ('start', 'restart') for s in self.steps)

    def actions(self):
        return [s.action for s in self.steps]


def target_state(observed, state):
    """The run state ``state`` asks of a VM that is ``observed`` (present keeps what is there)."""
    if state == 'present':
        if observed == 'crashed':
            return 'stopped'
        return {'running': 'running', 'paused': 'paused', 'standby': 'standby'}.get(observed, 'stopped')
    if state == 'restarted':
        return 'running'
    return state


def _strip(record):
    return dict((k, v) for k, v in (record or {}).items() if k not in ('record_version', 'name', 'managed_files'))


# -- state=running|paused|stopped|present|restarted|standby ---------------------------------------
def plan_present(obs, spec, config, cloud, state, facts, binary, launcher='auto', apply_changes='live', earlier=()):
    """The plan for a VM that should exist. ``facts`` (gathered by the engine):
    missing_disks [(index, disk)], cidata_exists, dhcp_hosts, stale_run_files, stale_taps,
    leftover_managed (files of an earlier VM of this name), meminfo and host_cpus (when starting).
    ``earlier``: the changes of the recovery and identity phases (a record they changed is no
    change of its own)."""
    plan = Plan(spec, config, cloud)
    target = plan.target = target_state(obs.state, state)
    starting = target in ('running', 'paused') and not obs.live
    if starting and facts.get('meminfo') is not None:
        plan.warnings.extend(capacity_warnings(spec, facts['meminfo'], facts.get('host_cpus') or 1))
    record = copy.deepcopy(obs.record) if obs.record else {'managed_files': list(facts.get('leftover_managed') or [])}
    record.setdefault('managed_files', [])
    # 1. files: managed disks and the cloud-init image; the NICs' entries in the DHCP server of
    # their bridges (before a start, so the guest's first request finds them)
    _plan_files(spec, cloud, record, facts, plan)
    if facts.get('dhcp_hosts'):
        plan.add('DHCP host entries (static leases and names) on %s' % ', '.join(sorted(facts['dhcp_hosts'])),
                 Step('dhcp_hosts', hosts=facts['dhcp_hosts']))
    # 2. the run state
    if obs.state == 'crashed':
        plan.add('clean up after the crashed VMM', Step('cleanup_vmm'))
    if obs.state in ('crashed', 'stopped') and target == 'stopped':
        if obs.state != 'crashed' and facts.get('stale_run_files'):
            plan.add('remove the stale socket and pid file', Step('cleanup_vmm'))
        if facts.get('stale_taps'):
            plan.add('remove the stale taps %s' % ', '.join(facts['stale_taps']),
                     Step('remove_taps', taps=list(facts['stale_taps'])))
    if obs.state == 'created' and target == 'stopped':
        plan.add('stop the VMM (VM not booted)', Step('stop'))
    if target == 'standby':
        if obs.live:
            plan.add('put the VM in standby: snapshot its memory into %s and stop the VMM' % facts.get('standby_path'),
                     Step('standby', run_state=obs.state))
        elif obs.state != 'standby':
            raise StateError("state: standby keeps the state of a running or paused VM, and %s is %s"
                             % (facts.get('name'), obs.state), option='state')
    elif obs.live:
        plan_live(obs, spec, config, target, state, apply_changes, plan)
    elif target in ('running', 'paused'):
        if obs.state == 'created':
            plan.add(None, Step('stop_vmm'))  # a fresh VMM takes the new config
        plan.add('start the VM', Step('start', paused=target == 'paused'))
    # 3. the record: written first, so that a run killed half-way is converged by the next one
    new = dict(record, spec=spec, config=config, binary=binary, run_state=target)
    # the launcher is kept only when it is not the default, so records of earlier releases do not
    # change; ch_snapshot (no launcher option) restarts the VMM the same way
    new.pop('launcher', None)
    if launcher not in ('auto', 'direct'):
        new['launcher'] = launcher
    if plan.boots:
        # CH's ceiling for live RAM growth is set at boot and not echoed once RAM has grown
        new['ram_ceiling'] = config['memory']['size'] + (config['memory'].get('hotplug_size') or 0)
    plan.record = new
    if _strip(new) != _strip(obs.record) and not plan.changes and not earlier:
        plan.add('update the record')
    return plan


def _plan_files(spec, cloud, record, facts, plan):
    managed = record['managed_files']
    for index, disk in facts.get('missing_disks') or []:
        option = 'disks[%d]' % index
        if disk['backing_file']:
            plan.add('create qcow2 overlay %s on %s' % (disk['path'], disk['backing_file']),
                     Step('create_overlay', disk=disk, option=option))
        else:
            plan.add('create sparse raw image %s (%s)' % (disk['path'], specmod.human_size(disk['size'])),
                     Step('create_raw', disk=disk, option=option))
        if disk['path'] not in managed:
            managed.append(disk['path'])
    if cloud:
        path = facts['cidata_path']
        old = ((record.get('spec') or {}).get('cloud_init') or {}).get('digest')
        if old != cloud['digest'] or not facts.get('cidata_exists'):
            plan.add('build the cloud-init image %s' % path, Step('build_iso', path=path))
            if path not in managed:
                managed.append(path)


def capacity_warnings(spec, mem, host_cpus):
    """Warnings for a VM about to start on an over-committed host; HostError when its hugepages
    cannot be had at all."""
    warnings = []
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
        warnings.append("memory: the VM's %s exceed the host's available memory (%s): the host is over-committed"
                        % (specmod.human_size(need), specmod.human_size(mem['available_bytes'])))
    if spec['cpus'] > host_cpus:
        warnings.append("cpus: the VM's %d vCPUs exceed the host's %d CPUs" % (spec['cpus'], host_cpus))
    return warnings


# -- a live VM ------------------------------------------------------------------------------------
def plan_live(obs, spec, config, target, state, apply_changes, plan):
    """A live VM: run-state changes, then live config changes (or restart_required)."""
    apply = apply_changes or 'live'
    ceiling = (obs.record or {}).get('ram_ceiling')
    live_ops, restart_paths = live_diff(config, (obs.info or {}).get('config') or {}, spec, ceiling)
    needs_restart = bool(restart_paths)
    if state == 'restarted':
        if needs_restart or (live_ops and apply != 'never'):
            plan.add('restart the VM (stop and start) to apply %s' % ', '.join(restart_paths + [o[0] for o in live_ops]),
                     Step('restart', paused=False))
        else:
            plan.add('reboot the VM', Step('reboot'))
        return
    if target == 'stopped':
        # The record carries the changes: the VM gets them when it next boots.
        plan.add('stop the VM', Step('stop'))
        return
    if needs_restart and apply == 'restart':
        plan.add('restart the VM to apply %s' % ', '.join(restart_paths), Step('restart', paused=target == 'paused'))
        return
    if obs.state == 'paused' and target == 'running':
        plan.add('resume the VM', Step('resume'))
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
        plan.add('pause the VM', Step('pause'))


def live_diff(config, live, spec, ram_ceiling=None):
    """([(change, Step)], [paths needing a restart]) between the desired config and CH's echo of
    the live one."""
    ops = []
    restart = []
    rest_desired = copy.deepcopy(config)
    # vCPUs: within the boot-time max_vcpus
    want_cpus = config['cpus']['boot_vcpus']
    have_cpus = (live.get('cpus') or {}).get('boot_vcpus')
    max_live = (live.get('cpus') or {}).get('max_vcpus')
    if want_cpus != have_cpus:
        if max_live is not None and want_cpus <= max_live and config['cpus']['max_vcpus'] == max_live:
            ops.append(('resize vCPUs %s -> %s' % (have_cpus, want_cpus), Step('resize', desired_vcpus=want_cpus)))
        else:
            restart.append('cpus')
    rest_desired['cpus'].pop('boot_vcpus', None)
    # RAM: CH v53.0 grows RAM by ACPI DIMMs of a multiple of 128 MiB, up to the RAM it booted with
    # plus hotplug_size; it writes the new size to memory.size, so after a growth the echo no
    # longer shows the boot size: the ceiling recorded at boot bounds it. ACPI RAM never shrinks
    # (CH accepts a smaller size and only rewrites its config): a restart.
    lmem = live.get('memory') or {}
    have_ram = (lmem.get('size') or 0) + (lmem.get('hotplugged_size') or 0)
    want_ram = config['memory']['size']
    if want_ram != have_ram:
        ceiling = (lmem.get('size') or 0) + (lmem.get('hotplug_size') or 0)
        if ram_ceiling:
            ceiling = min(ceiling, ram_ceiling)
        if have_ram < want_ram <= ceiling and (want_ram - have_ram) % specmod.ACPI_DIMM == 0 and \
                config['memory'].get('hotplug_size', 0) == (lmem.get('hotplug_size') or 0):
            ops.append(('resize RAM %s -> %s' % (specmod.human_size(have_ram), specmod.human_size(want_ram)),
                        Step('resize', desired_ram=want_ram)))
        else:
            restart.append('memory')
    rest_desired['memory'].pop('size', None)
    # balloon
    if config.get('balloon') and live.get('balloon'):
        want_b = config['balloon']['size']
        have_b = live['balloon'].get('size')
        if want_b != have_b:
            ops.append(('resize balloon %s -> %s' % (specmod.human_size(have_b or 0), specmod.human_size(want_b)),
                        Step('resize', desired_balloon=want_b)))
        rest_desired['balloon'].pop('size', None)
    # disks and NICs: hot-add / hot-remove by id
    nets = dict((n['id'], n) for n in spec['networks'])
    for key, kind in (('disks', 'disk'), ('net', 'NIC')):
        ops.extend(_device_ops(key, kind, config.get(key) or [], live.get(key) or [], nets))
        rest_desired.pop(key, None)
    restart.extend(specmod.subset_diff(rest_desired, live))
    # subset_diff compares only what the desired config sets: a restart-only device that was
    # removed (balloon: {}, vsock: {}, platform: {}, devices: []) is a key the live VM still has.
    restart.extend(key for key in REMOVABLE if not config.get(key) and live.get(key))
    return ops, restart


def _device_ops(key, kind, wanted, present, nets):
    ops = []
    want = dict((d['id'], d) for d in wanted)
    have = dict((d.get('id'), d) for d in present)
    for dev_id, dev in want.items():
        if dev_id in have and not specmod.subset_diff(dev, have[dev_id]):
            continue
        if dev_id in have:
            ops.append(('remove %s %s (changed)' % (kind, dev_id), Step('remove_device', id=dev_id)))
        if key == 'net':
            ops.append(('hot-add NIC %s (tap %s)' % (dev_id, dev['tap']), Step('add_net', config=dev, net=nets.get(dev_id))))
        else:
            ops.append(('hot-add disk %s (%s)' % (dev_id, dev['path']), Step('add_disk', config=dev)))
    for dev_id in have:
        if dev_id not in want:
            tap = have[dev_id].get('tap') if key == 'net' else None
            ops.append(('hot-remove %s %s' % (kind, dev_id), Step('hot_remove', id=dev_id, tap=tap)))
    return ops


# -- state=absent ---------------------------------------------------------------------------------
def plan_absent(obs, facts, purge):
    """The plan that removes a VM. ``facts``: stale_run_files, present_taps, dhcp_files,
    dhcp_leases, vm_dir, vm_dir_exists, leftover_managed (the existing files managed.json names,
    when there is no record)."""
    plan = Plan()
    record = obs.record or {}
    spec = record.get('spec') or {}
    if obs.pid is not None:
        plan.add('stop the VMM (pid %d)' % obs.pid, Step('stop_vmm'))
    elif facts.get('stale_run_files'):
        plan.add('remove the stale socket and pid file', Step('cleanup_vmm'))
    if facts.get('present_taps'):
        plan.add('remove taps %s' % ', '.join(facts['present_taps']), Step('remove_taps', taps=list(facts['present_taps'])))
    files, leases = facts.get('dhcp_files') or {}, facts.get('dhcp_leases') or []
    if files or leases:
        plan.add('remove the DHCP host entries and names of the VM on %s%s' % (
            ', '.join(sorted(set(files) | set(b for b, _lease in leases))),
            ' and release its leases (%s)' % ', '.join(lease['ip'] for _b, lease in leases) if leases else ''),
            Step('dhcp_remove', files=files, leases=leases))
    if obs.record is not None:
        plan.add('remove the record', Step('remove_record', managed=list(record.get('managed_files', [])), purge=purge))
    # Without a record, managed.json (written by a removal without purge) still names our files.
    leftover = facts.get('leftover_managed') or []
    if purge and (facts.get('vm_dir_exists') or leftover):
        managed = sorted(set(record.get('managed_files', [])) | set(leftover))
        user_disks = sorted(set(d['path'] for d in spec.get('disks', []) if d['path'] not in managed))
        plan.add('purge %s (managed disks, cloud-init image, logs, snapshots)' % facts['vm_dir'],
                 Step('purge', managed=managed, user_disks=user_disks))
    return plan
