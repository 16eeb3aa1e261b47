#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
module: ch_vms
short_description: Converge many Cloud Hypervisor VMs of a host in one task, several at once
version_added: 0.1.0
description:
  - Converges every VM of O(vms) the way M(cloudhv.ch.ch_vm) converges one, in one module run on the
    host instead of one run per VM; the same engine, the same records, the same per-VM lock, so a
    M(cloudhv.ch.ch_vm) task and a M(cloudhv.ch.ch_vms) task touching the same VM at once serialize on
    that VM's lock and leave it consistent.
  - Validation first. Every item is checked (its options against M(cloudhv.ch.ch_vm)'s, names unique,
    static addresses not given twice, then the engine's own checks of files, bridges, addresses and
    sizes) before anything on the host is touched. One bad item fails the task naming it, for example
    C(vms[3].memory), and nothing changes.
  - Runtime failures are per VM. When one VM fails (its VMM does not start, CH refuses its
    configuration, its lock is busy), the other VMs still converge; the task then fails, with
    RV(failed_vms) listing each failed VM and its error and a message naming them, and still returns
    every other VM's result.
  - O(parallel) VMs converge at once (threads of the one module process; each VM still waits on its
    own API calls). A VM cloned (C(clone_from)) from another VM of the list waits for that VM;
    clones are created one at a time.
  - With O(prune=true), the VMs recorded in O(state_dir) that O(vms) does not name become
    V(absent) (stopped and unrecorded; their managed files are kept, as without
    O(cloudhv.ch.ch_vm#module:purge)). VMs of other state directories are never looked at.
  - Check mode predicts every VM's changes, the VMs to prune and the diff, and touches nothing.
  - The role C(cloudhv.ch.vms) converges a host's C(cloudhv_vms) with one M(cloudhv.ch.ch_vms) task.
author:
  - cloudhv.ch maintainers (@cloudhv)
options:
  vms:
    description:
      - The VMs, each a dict of the options of M(cloudhv.ch.ch_vm) with the same names, validation,
        defaults and inheritance (an option an item leaves out keeps an existing VM's value), for
        example C(name), C(state), C(cpus), C(memory), C(kernel), C(disks), C(networks),
        C(cloud_init), C(clone_from), C(purge). See M(cloudhv.ch.ch_vm) for each of them.
      - C(name) is required in every item and must be unique in the list.
      - O(binary) and O(api_timeout) may be set per item; an item that leaves them out uses the task's.
        O(state_dir) and O(run_dir) are the task's only (they say which host's VMs these are).
      - C(cloud_init.user_data) stays secret as with M(cloudhv.ch.ch_vm) (the whole list is not logged
        on the host, and no result contains user data).
    type: list
    elements: dict
    required: true
  prune:
    description:
      - Also make every VM recorded in O(state_dir) that O(vms) does not name V(absent), without
        purge. RV(pruned) lists them (in check mode too).
    type: bool
    default: false
  parallel:
    description:
      - How many VMs converge at once (1 to 64). V(1) converges them one after another, in order.
    type: int
    default: 4
extends_documentation_fragment:
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
    details: An item with V(state=restarted) always reports a change.
  platform:
    platforms: posix
requirements:
  - httpx >= 0.23.3 on the target
  - pyroute2 >= 0.7.2 on the target (for C(networks) with a bridge)
seealso:
  - module: cloudhv.ch.ch_vm
  - module: cloudhv.ch.ch_vm_info
'''

EXAMPLES = r'''
- name: Converge the host's VMs, four at a time
  cloudhv.ch.ch_vms:
    vms:
      - name: web1
        cpus: 2
        memory: 2G
        firmware: /usr/local/share/cloud-hypervisor/hypervisor-fw
        disks:
          - path: /var/lib/cloudhv/vms/web1/root.qcow2
            backing_file: /srv/images/jammy-server-cloudimg-amd64.img
        networks:
          - bridge: br-vms
      - name: web2
        clone_from:
          vm: web1
      - name: old1
        state: absent
        purge: true
  register: fleet

- name: Keep exactly the declared VMs (the others are stopped and unrecorded)
  cloudhv.ch.ch_vms:
    vms: "{{ cloudhv_vms }}"
    prune: true
    parallel: 8

- name: Which VMs need a restart to apply recorded changes
  ansible.builtin.debug:
    var: fleet.restart_required
'''

RETURN = r'''
vms:
  description:
    - Every converged VM by name, each the RV(cloudhv.ch.ch_vm#module:vm) result of M(cloudhv.ch.ch_vm)
      (name, state, pid, api_socket, config, live_config, networks, disks, ...).
    - A failed VM is not in it (see RV(failed_vms)); a pruned VM is, with state V(absent).
  returned: always
  type: dict
  sample: {web1: {name: web1, state: running, pid: 4242, api_socket: /run/cloudhv/web1.sock}}
changes:
  description: Per VM, the short descriptions of what was (or in check mode would be) done; an empty list when nothing.
  returned: always
  type: dict
  sample: {web1: [start the VM], web2: []}
restart_required:
  description: The VMs whose records hold changes that only a restart applies.
  returned: always
  type: list
  elements: str
  sample: [web2]
pruned:
  description: The VMs that O(prune) made (or in check mode would make) V(absent).
  returned: always
  type: list
  elements: str
  sample: [old3]
failed_vms:
  description: The VMs that failed, each with C(name) and C(msg) (and the error's details, for example C(option)).
  returned: always
  type: list
  elements: dict
  sample: [{name: web3, msg: "Cloud Hypervisor refused vm.create (HTTP 400): ..."}]
'''

import copy
import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.cloudhv.ch.plugins.module_utils import fleet
from ansible_collections.cloudhv.ch.plugins.module_utils.common import (
    common_argument_spec,
    leaves,
    run_module,
)
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import OptionError
from ansible_collections.cloudhv.ch.plugins.module_utils.store import Layout
from ansible_collections.cloudhv.ch.plugins.module_utils.vm_options import argument_spec as vm_argument_spec

SECRET = 'VALUE_SPECIFIED_IN_NO_LOG_PARAMETER'
MAX_PARALLEL = 64


def item_spec():
    """ch_vm's options for one item: without state_dir and run_dir (the task's), and binary and
    api_timeout without a default (an item that leaves them out inherits the task's)."""
    spec = vm_argument_spec()
    for key in fleet.HOST_OPTIONS:
        spec.pop(key)
    for key in fleet.INHERITED:
        spec[key] = dict(spec[key])
        spec[key].pop('default', None)
    return spec


_ARG = re.compile(r"argument '([^']+)' is of type \S+(?: found in '([^']+)')?")
_FOUND = re.compile(r"^(.*?) found in (\S+)$")


def _option_of(message):
    """The option an ArgumentSpecValidator message is about, as a dotted path, or None."""
    match = _ARG.search(message)
    if match:
        return '%s.%s' % (match.group(2), match.group(1)) if match.group(2) else match.group(1)
    if '. Supported parameters include' in message:
        return message.split('. Supported parameters include', 1)[0].split(',')[0].strip()
    match = re.match(r"value of (\S+) must be", message)
    if match:
        return match.group(1)
    match = re.match(r"missing required arguments: (\S+?)(?: found in (\S+))?$", message)
    if match:
        return '%s.%s' % (match.group(2), match.group(1)) if match.group(2) else match.group(1)
    return None


def validate_items(module):
    """Every item against ch_vm's options; returns the validated parameters (the task's common
    options filled in), or raises OptionError naming vms[<index>].<option>."""
    validator = ArgumentSpecValidator(item_spec())
    items = []
    for index, raw in enumerate(module.params['vms']):
        if not isinstance(raw, dict):
            raise OptionError('vms[%d]' % index, "must be a dict of ch_vm options, got %s" % type(raw).__name__)
        result = validator.validate(copy.deepcopy(raw))
        if result.error_messages:
            message = result.error_messages[0]
            option = _option_of(message)
            where = 'vms[%d]' % index + ('.%s' % option if option else '')
            name = raw.get('name')
            raise OptionError(where, ('%s%s' % ('(VM %s) ' % name if name else '', message)))
        params = result.validated_parameters
        for key in fleet.HOST_OPTIONS:
            params[key] = module.params[key]
        for key in fleet.INHERITED:
            if params.get(key) is None:
                params[key] = module.params[key]
        items.append(params)
    fleet.check_list(items)
    return items


def prune_items(module, pruned):
    validator = ArgumentSpecValidator(item_spec())
    out = []
    for name in pruned:
        params = validator.validate({'name': name, 'state': 'absent'}).validated_parameters
        params.update(dict((k, module.params[k]) for k in fleet.HOST_OPTIONS + fleet.INHERITED))
        out.append(params)
    return out


def invocation(module):
    """The arguments echoed back: every item's user data replaced, as ch_vm does."""
    args = copy.deepcopy(module.params)
    for item in args.get('vms') or []:
        if isinstance(item, dict) and isinstance(item.get('cloud_init'), dict) and \
                item['cloud_init'].get('user_data') is not None:
            item['cloud_init']['user_data'] = SECRET
    return {'module_args': args}


def action(module):
    if not 1 <= module.params['parallel'] <= MAX_PARALLEL:
        raise OptionError('parallel', "must be between 1 and %d, got %d" % (MAX_PARALLEL, module.params['parallel']))
    items = validate_items(module)
    names = [p['name'] for p in items]
    pruned = []
    if module.params['prune']:
        pruned = fleet.prune_names(Layout(module.params['state_dir'], module.params['run_dir']), names)
    runner = fleet.Fleet(items + prune_items(module, pruned), parallel=module.params['parallel'],
                         check_mode=module.check_mode)
    runner.validate()
    results, failed = runner.run()
    out = fleet.summarize(runner.items, results, failed, [n for n in pruned if n not in failed], diff=module._diff)
    for warning in out.pop('warnings'):
        module.warn(warning)
    if failed:
        out['msg'] = "%d of %d VMs failed: %s" % (len(failed), len(runner.items), '; '.join(
            '%s: %s' % (f['name'], f['msg']) for f in out['failed_vms']))
        out['failed'] = True
    return out


def main():
    module = AnsibleModule(
        argument_spec=common_argument_spec(
            # no_log: the items' cloud_init.user_data is secret. Ansible then keeps the whole list out
            # of the host's log; the result never holds user data (see invocation()), so the masking
            # of every leaf of the list in the output is taken back below, as ch_vm does.
            vms=dict(type='list', elements='dict', required=True, no_log=True),
            prune=dict(type='bool', default=False),
            parallel=dict(type='int', default=4),
        ),
        supports_check_mode=True)
    module.no_log_values.difference_update(leaves(module.params['vms']))
    run_module(module, action, invocation=invocation(module))


if __name__ == '__main__':
    main()
