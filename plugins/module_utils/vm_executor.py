# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs a plan of vm_plan.py on a VM: one function per step action, all through the ``Vm``
handle. Nothing here decides; a step that is not in ACTIONS is a bug in the planner.
No Ansible imports here; the caller holds the VM's lock.
"""

from __future__ import annotations

import os

from ansible_collections.cloudhv.ch.plugins.module_utils import dhcp
from ansible_collections.cloudhv.ch.plugins.module_utils.fsutil import unlink_quiet
from ansible_collections.cloudhv.ch.plugins.module_utils.store import ensure_dir, write_json_atomic


class Context:
    """What the steps need besides the VM: the plan (spec, config, cloud-init, record) and the
    task's stop options."""

    def __init__(self, plan, stop_timeout=30.0, force=False):
        self.plan = plan
        self.stop_timeout = stop_timeout if stop_timeout is not None else 30.0
        self.force = bool(force)


def execute(vm, plan, stop_timeout=30.0, force=False):
    ctx = Context(plan, stop_timeout, force)
    for step in plan.steps:
        ACTIONS[step.action](vm, ctx, **step.args)


# -- files ------------------------------------------------------------------------------------------
def _parent_of(vm, path):
    if path.startswith(vm.vm_dir):
        ensure_dir(os.path.dirname(path))


def create_raw(vm, ctx, disk, option):
    from ansible_collections.cloudhv.ch.plugins.module_utils import images
    _parent_of(vm, disk['path'])
    images.create_raw(disk['path'], disk['size'], option='%s.size' % option)


def create_overlay(vm, ctx, disk, option):
    from ansible_collections.cloudhv.ch.plugins.module_utils import images
    _parent_of(vm, disk['path'])
    images.create_overlay(disk['path'], disk['backing_file'], option='%s.backing_file' % option)


def build_iso(vm, ctx, path):
    from ansible_collections.cloudhv.ch.plugins.module_utils import cloudinit
    cloudinit.build_iso(path, ctx.plan.cloud['files'])


def dhcp_hosts(vm, ctx, hosts):
    dhcp.apply_vm_changes(vm.layout, hosts)


def dhcp_remove(vm, ctx, files, leases):
    dhcp.apply_vm_changes(vm.layout, files)
    dhcp.release_leases(vm.layout, leases)


def remove_record(vm, ctx, managed, purge):
    """Without purge the files we created stay, and so does the knowledge that they are ours: a
    later purge of a re-created VM of this name still cleans them up."""
    managed = [p for p in managed if os.path.exists(p)]
    if managed and not purge:
        write_json_atomic(vm.managed_list_path(), {'managed_files': managed})
    os.unlink(vm.layout.record_path(vm.name))


def purge(vm, ctx, managed, user_disks):
    """Everything in the VM's own directory is ours (record, ISO, logs, snapshots, managed disks),
    except user disks the user chose to keep there: those survive."""
    user_disks = set(user_disks)
    for path in managed:
        if path not in user_disks:
            unlink_quiet(path)
    if not os.path.isdir(vm.vm_dir):
        return
    for root, dirs, files in os.walk(vm.vm_dir, topdown=False):
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
        os.rmdir(vm.vm_dir)
    except OSError:
        pass


def remove_files(vm, ctx, paths):
    for path in paths:
        unlink_quiet(path)


# -- the VMM ----------------------------------------------------------------------------------------
def start(vm, ctx, paused=False):
    vm.start(ctx.plan.spec, ctx.plan.config, paused=paused)


def stop(vm, ctx):
    vm.stop(ctx.plan.spec or (vm.record() or {}).get('spec'), timeout=ctx.stop_timeout, force=ctx.force)


def restart(vm, ctx, paused=False):
    stop(vm, ctx)
    start(vm, ctx, paused=paused)


def stop_vmm(vm, ctx, kill=False):
    vm.vmm.stop(timeout=ctx.stop_timeout, force=ctx.force or kill)


def cleanup_vmm(vm, ctx):
    vm.vmm.cleanup()


def remove_taps(vm, ctx, taps):
    vm.remove_taps(taps)


def standby(vm, ctx, run_state):
    from ansible_collections.cloudhv.ch.plugins.module_utils import standby as standby_mod
    standby_mod.go(vm, ctx.plan.spec, ctx.plan.record, run_state, stop_timeout=ctx.stop_timeout, force=ctx.force)


# -- the live VM --------------------------------------------------------------------------------------
def reboot(vm, ctx):
    vm.client().reboot()


def resume(vm, ctx):
    vm.client().resume()


def pause(vm, ctx):
    vm.client().pause()


def resize(vm, ctx, **desired):
    vm.client().resize(**desired)


def remove_device(vm, ctx, id):  # pylint: disable=redefined-builtin
    vm.client().remove_device(id)


def add_net(vm, ctx, config, net):
    vm.hot_add_net(config, net)


def add_disk(vm, ctx, config):
    vm.client().add_disk(config)


def hot_remove(vm, ctx, id, tap):  # pylint: disable=redefined-builtin
    vm.hot_remove(id, tap)


ACTIONS = dict((f.__name__, f) for f in (
    create_raw, create_overlay, build_iso, dhcp_hosts, dhcp_remove, remove_record, purge, remove_files,
    start, stop, restart, stop_vmm, cleanup_vmm, remove_taps, standby,
    reboot, resume, pause, resize, remove_device, add_net, add_disk, hot_remove))
