#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
module: ch_vm_info
short_description: Information about the Cloud Hypervisor VMs recorded on a host
version_added: 0.1.0
description:
  - Lists the VMs recorded in O(state_dir) with their observed run state, VMM pid, recorded spec,
    the live configuration CH reports for running VMs, taps, MACs, and the paths of their logs and
    sockets.
  - A VM put in standby by C(cloudhv.ch.ch_vm) (its state kept in a snapshot, its VMM stopped) is
    reported as V(standby), and every VM comes with the list of its snapshots.
  - A VM whose record says it runs but whose VMM is gone (a crash, a killed host process) is
    reported as V(crashed); C(cloudhv.ch.ch_vm) with O(cloudhv.ch.ch_vm#module:state=running)
    brings it back.
  - Read-only; never changes anything.
author:
  - cloudhv.ch maintainers (@cloudhv)
options:
  name:
    description: Only this VM. All recorded VMs when omitted.
    type: str
extends_documentation_fragment:
  - cloudhv.ch.common
  - cloudhv.ch.common.action_group
  - cloudhv.ch.common.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
  platform:
    platforms: posix
requirements:
  - httpx >= 0.23.3 on the target
seealso:
  - module: cloudhv.ch.ch_vm
'''

EXAMPLES = r'''
- name: List every VM on the host
  cloudhv.ch.ch_vm_info:
  register: vms

- name: Show the VMs that crashed
  ansible.builtin.debug:
    msg: "{{ vms.vms | selectattr('state', 'equalto', 'crashed') | map(attribute='name') | list }}"

- name: One VM's live configuration
  cloudhv.ch.ch_vm_info:
    name: web1
  register: web1
'''

RETURN = r'''
vms:
  description: The VMs, sorted by name.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: VM name.
      type: str
      sample: web1
    state:
      description:
        - V(running), V(paused), V(stopped), V(standby) or V(crashed).
        - V(unknown) when the VM's record cannot be used (damaged, say truncated or edited by hand, or
          written by a newer release of the collection) or its VMM cannot be asked; RV(vms[].error) says why.
          The other VMs are listed as usual.
      type: str
      sample: running
    error:
      description: Why the state is V(unknown), with the way out (for a record that cannot be used, remove the
        VM with M(cloudhv.ch.ch_vm) O(cloudhv.ch.ch_vm#module:state=absent) O(cloudhv.ch.ch_vm#module:force=true)).
      returned: when the state is V(unknown)
      type: str
    pid:
      description: PID of the VMM, or null.
      type: int
      sample: 4242
    spec:
      description: The recorded spec (user data only as a digest).
      type: dict
    config:
      description: The VmConfig recorded for the VM.
      type: dict
    live_config:
      description: The configuration CH reports, when the VMM runs.
      type: dict
    memory_actual_size:
      description: Guest RAM in bytes as CH reports it, when running.
      type: int
    networks:
      description:
        - NICs with id, tap, MAC and bridge, and C(address), the guest's IPv4 address on the bridge with C(address_source)
          V(static) (C(networks[].address) of M(cloudhv.ch.ch_vm)) or V(lease) (a dynamic lease in the lease file of the
          bridge's DHCP server); both V(null) when neither is known.
      type: list
      elements: dict
      sample: [{id: net0, tap: chv1a2b3c4d5e6f, mac: '02:5e:11:22:33:44', bridge: br-vms, address: 10.77.0.10, address_source: static}]
    disks:
      description: Disks with id, path and whether the module manages the file.
      type: list
      elements: dict
    api_socket:
      description: Path of the VM's API socket.
      type: str
      sample: /run/cloudhv/web1.sock
    log_file:
      description: The VMM's log.
      type: str
      sample: /var/lib/cloudhv/vms/web1/ch.log
    serial_file:
      description: The serial console log, when the serial port writes to a file.
      type: str
      sample: /var/lib/cloudhv/vms/web1/serial.log
    snapshots:
      description: The VM's snapshots (see M(cloudhv.ch.ch_snapshot)), sorted by name.
      type: list
      elements: dict
      contains:
        name:
          description: Snapshot name.
          type: str
        path:
          description: Its directory.
          type: str
        size_bytes:
          description: Space it takes on disk (allocated blocks).
          type: int
        created:
          description: When it was taken (UTC, ISO 8601).
          type: str
        ch_version:
          description: Version of the Cloud Hypervisor that took it.
          type: str
        includes_disks:
          description: Whether it holds copies of the VM's disks.
          type: bool
      sample: [{name: before-upgrade, path: /var/lib/cloudhv/vms/web1/snapshots/before-upgrade, size_bytes: 276824064,
                created: '2026-08-14T09:12:44Z', ch_version: 53.0.0, includes_disks: true}]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cloudhv.ch.plugins.module_utils.common import common_argument_spec, run_module
from ansible_collections.cloudhv.ch.plugins.module_utils.vm_info import vm_infos
from ansible_collections.cloudhv.ch.plugins.module_utils.store import Layout, check_name


def action(module):
    params = module.params
    if params['name'] is not None:
        check_name(params['name'])
    layout = Layout(params['state_dir'], params['run_dir'])
    return dict(changed=False, vms=vm_infos(layout, params['binary'], params['name']))


def main():
    module = AnsibleModule(argument_spec=common_argument_spec(name=dict(type='str')),
                           supports_check_mode=True)
    run_module(module, action)


if __name__ == '__main__':
    main()
