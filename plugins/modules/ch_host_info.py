#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
module: ch_host_info
short_description: Facts about a Cloud Hypervisor host
version_added: 0.1.0
description:
  - Reports what a host offers for Cloud Hypervisor virtual machines, without changing anything.
  - C(/dev/kvm) presence and access, the KVM module that provides it (C(kvm_intel), C(kvm_amd) or
    others such as C(kvm_pvm)), nested virtualization, CPU virtualization flags, C(/dev/net/tun),
    C(vhost_net), the Cloud Hypervisor binary's version, firmware files present, memory and
    hugepages, and the VMs recorded in O(state_dir).
  - Never fails on an unusual host. A probe that cannot be answered is reported as V(null) with a
    reason, for example nested virtualization on a host whose KVM comes from C(kvm_pvm).
author:
  - cloudhv.ch maintainers (@cloudhv)
options:
  firmware_dir:
    description:
      - Directory to look for firmware files in (C(hypervisor-fw), C(CLOUDHV.fd), C(CLOUDHV_EFI.fd)).
    type: path
    default: /usr/local/share/cloud-hypervisor
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
notes:
  - O(api_timeout) and O(run_dir) are accepted for use with C(module_defaults) but not used by this module.
seealso:
  - module: cloudhv.ch.ch_vm_info
'''

EXAMPLES = r'''
- name: Read the host's virtualization facts
  cloudhv.ch.ch_host_info:
  register: host

- name: Stop early when KVM is not usable
  ansible.builtin.assert:
    that:
      - host.host.kvm.present
      - host.host.kvm.writable
    fail_msg: "/dev/kvm is missing or not writable on {{ inventory_hostname }}"

- name: Show which KVM module provides /dev/kvm and whether nested virtualization is on
  ansible.builtin.debug:
    msg: "{{ host.host.kvm_module }} nested={{ host.host.nested }} ({{ host.host.nested_reason }})"
'''

RETURN = r'''
host:
  description: Facts about the host.
  returned: always
  type: dict
  contains:
    kvm:
      description: C(/dev/kvm) presence and access for the user running the module.
      type: dict
      returned: always
      sample: {path: /dev/kvm, present: true, readable: true, writable: true}
    kvm_module:
      description: The KVM vendor module providing C(/dev/kvm), or V(null) when none is loaded.
      type: str
      returned: always
      sample: kvm_intel
    kvm_modules:
      description: Every loaded C(kvm_*) module.
      type: list
      elements: str
      returned: always
      sample: [kvm_pvm]
    nested:
      description: Nested virtualization; V(null) when it cannot be known (see RV(host.nested_reason)).
      type: bool
      returned: always
      sample: true
    nested_reason:
      description: Where the nested value was read from, or why it is unknown.
      type: str
      returned: always
      sample: /sys/module/kvm_intel/parameters/nested reports nested=Y
    cpu_flags:
      description: Virtualization-related CPU flags found in C(/proc/cpuinfo).
      type: list
      elements: str
      returned: always
      sample: [hypervisor, vmx]
    cpus:
      description: Number of CPUs of the host.
      type: int
      returned: always
      sample: 16
    memory:
      description: Host memory and hugepages, in bytes and pages.
      type: dict
      returned: always
      sample: {total_bytes: 25769803776, available_bytes: 20000000000, hugepages_total: 0,
               hugepages_free: 0, hugepage_size_bytes: 2097152}
    tun:
      description: C(/dev/net/tun) presence and access.
      type: dict
      returned: always
      sample: {path: /dev/net/tun, present: true, readable: true, writable: true}
    vhost_net:
      description: C(/dev/vhost-net) presence and access, and whether the C(vhost_net) module is loaded.
      type: dict
      returned: always
      sample: {path: /dev/vhost-net, present: true, readable: true, writable: true, module_loaded: true}
    binary:
      description: The Cloud Hypervisor binary named by O(binary) and its version from C(--version).
      type: dict
      returned: always
      sample: {path: /usr/local/bin/cloud-hypervisor, present: true, executable: true, version: '53.0',
               version_output: cloud-hypervisor v53.0, error: null}
    firmware:
      description: Firmware files found in O(firmware_dir).
      type: dict
      returned: always
      sample: {dir: /usr/local/share/cloud-hypervisor, present: [hypervisor-fw], missing: [CLOUDHV.fd, CLOUDHV_EFI.fd]}
    vms:
      description: Names of the VMs recorded in O(state_dir).
      type: list
      elements: str
      returned: always
      sample: [web1, db1]
    state_dir:
      description: The state directory that was read.
      type: str
      returned: always
      sample: /var/lib/cloudhv
    run_dir:
      description: The run directory of the collection.
      type: str
      returned: always
      sample: /run/cloudhv
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cloudhv.ch.plugins.module_utils.common import common_argument_spec, run_module
from ansible_collections.cloudhv.ch.plugins.module_utils.hostinfo import gather


def action(module):
    params = module.params
    host = gather(params['binary'], params['firmware_dir'], params['state_dir'], params['run_dir'])
    return dict(changed=False, host=host)


def main():
    module = AnsibleModule(
        argument_spec=common_argument_spec(
            firmware_dir=dict(type='path', default='/usr/local/share/cloud-hypervisor'),
        ),
        supports_check_mode=True,
    )
    run_module(module, action)


if __name__ == '__main__':
    main()
