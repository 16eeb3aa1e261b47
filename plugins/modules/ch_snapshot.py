#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
module: ch_snapshot
short_description: Take, delete and restore snapshots of Cloud Hypervisor VMs, disks included
version_added: 0.1.0
description:
  - Cloud Hypervisor (CH) snapshots hold CPU, device and memory state but not disk contents. This
    module adds copies of the VM's writable disks, taken while the VM is paused (reflinks where the
    filesystem supports them, sparse copies otherwise), so that a restore brings memory and disks
    back together.
  - A snapshot is built in a temporary directory next to its final path, fsynced, and renamed into
    place; a failure (a full disk, CH refusing) leaves nothing at the final path. A VM that was
    running is resumed on every way out. If the module itself is killed mid-way, the next
    M(cloudhv.ch.ch_vm) or M(cloudhv.ch.ch_snapshot) run on that VM resumes it and removes the
    partial snapshot.
  - A restore checks the snapshot (sha256 of CH's C(config.json) and C(state.json), CH major version)
    before stopping anything, prepares the disk copies next to the VM's disks, then stops the VMM,
    swaps the disks in, and restores in a new VMM. If CH refuses, the VM's disks are put back and it
    is left stopped.
  - To create a new VM from a snapshot, or fork a running VM, use O(cloudhv.ch.ch_vm#module:clone_from).
    M(cloudhv.ch.ch_vm_info) lists each VM's snapshots.
author:
  - cloudhv.ch maintainers (@cloudhv)
options:
  vm:
    description: Name of the VM.
    type: str
    required: true
  name:
    description: Name of the snapshot, 1-48 characters from C([A-Za-z0-9_-]), starting with a letter or digit.
    type: str
    required: true
  state:
    description:
      - V(present) takes the snapshot if it does not exist; an existing one is left alone.
      - V(absent) deletes it. It refuses while a linked clone (C(clone_from.disks=overlay)) uses its disks.
        It warns when clones still hard-link its C(memory-ranges) (in their C(clone-source)), since that
        space is freed only when those clones are removed.
      - V(restored) brings the VM back to it; always changed.
    type: str
    choices: [present, absent, restored]
    default: present
  path:
    description:
      - The snapshot's directory. Default C(<state_dir>/vms/<vm>/snapshots/<name>). Its parent must exist.
      - The path is remembered, so later tasks can leave it out.
    type: path
  include_disks:
    description: Copy the VM's writable disks into the snapshot (with O(state=present)).
    type: bool
    default: true
  resume:
    description: With O(state=restored), V(true) leaves the VM running and V(false) paused.
    type: bool
    default: true
extends_documentation_fragment:
  - cloudhv.ch.restore_options
  - cloudhv.ch.common
  - cloudhv.ch.common.action_group
  - cloudhv.ch.common.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: partial
    details: V(state=restored) always reports a change.
  platform:
    platforms: posix
requirements:
  - httpx >= 0.23.3 on the target
seealso:
  - module: cloudhv.ch.ch_vm
  - module: cloudhv.ch.ch_vm_info
'''

EXAMPLES = r'''
- name: Snapshot web1 (memory and disks) before an upgrade
  cloudhv.ch.ch_snapshot:
    vm: web1
    name: before-upgrade

- name: Roll web1 back to it, leaving it paused
  cloudhv.ch.ch_snapshot:
    vm: web1
    name: before-upgrade
    state: restored
    resume: false

- name: A memory-only snapshot on another filesystem
  cloudhv.ch.ch_snapshot:
    vm: web1
    name: mem-only
    path: /srv/snapshots/web1-mem-only
    include_disks: false

- name: Delete the snapshot
  cloudhv.ch.ch_snapshot:
    vm: web1
    name: before-upgrade
    state: absent
'''

RETURN = r'''
snapshot:
  description: The snapshot (predicted in check mode; for O(state=absent), the one deleted).
  returned: always
  type: dict
  contains:
    name:
      description: Snapshot name.
      type: str
      sample: before-upgrade
    vm:
      description: The VM it belongs to.
      type: str
      sample: web1
    path:
      description: Its directory.
      type: str
      sample: /var/lib/cloudhv/vms/web1/snapshots/before-upgrade
    size_bytes:
      description: Space it takes on disk (allocated blocks, so sparse files count what they hold). Null in check mode.
      type: int
      sample: 276824064
    created:
      description: When it was taken (UTC, ISO 8601).
      type: str
      sample: '2026-08-14T09:12:44Z'
    ch_version:
      description: Version of the Cloud Hypervisor that took it (C(vmm.ping)).
      type: str
      sample: 53.0.0
    includes_disks:
      description: Whether it holds copies of the VM's disks.
      type: bool
      sample: true
changes:
  description: Short descriptions of what was (or in check mode would be) done.
  returned: always
  type: list
  elements: str
  sample: ['snapshot web1 (pausing it, then resuming it) into /var/lib/cloudhv/vms/web1/snapshots/s1, with copies of its disks']
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cloudhv.ch.plugins.module_utils import restore_options
from ansible_collections.cloudhv.ch.plugins.module_utils.common import common_argument_spec, run_module
from ansible_collections.cloudhv.ch.plugins.module_utils.snapshot_engine import SnapshotManager


def argument_spec():
    return common_argument_spec(
        vm=dict(type='str', required=True),
        name=dict(type='str', required=True),
        state=dict(type='str', default='present', choices=['present', 'absent', 'restored']),
        path=dict(type='path'),
        include_disks=dict(type='bool', default=True),
        resume=dict(type='bool', default=True),
        **restore_options.argument_spec()
    )


def action(module):
    result = SnapshotManager(module.params, check_mode=module.check_mode).run()
    for warning in result.pop('warnings', []):
        module.warn(warning)
    if not module._diff:
        result.pop('diff', None)
    return result


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run_module(module, action)


if __name__ == '__main__':
    main()
