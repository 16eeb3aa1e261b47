# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ch_vm's options, in one table: what ch_vm (and ch_vms, for each item) validates against, and
what the engine needs to know about each option.

One row per option of ch_vm (the common options binary, state_dir, run_dir and api_timeout are
common.py's and are added by :func:`argument_spec`):

- ``spec``: its argument spec entry, exactly as AnsibleModule takes it;
- ``new``: its value for a new VM when the task leaves it unset (a clone starts from its source's
  values instead); for an option with an argspec default, that default;
- ``keeps``: whether an unset value (None) keeps the VM's recorded value (spec.normalize), so an
  ad hoc ``name=web1 state=stopped`` redefines nothing;
- ``vmconfig``: the CH VmConfig paths it sets (spec.build_config), each with how a change of it
  reaches a running VM: LIVE (vm_plan.live_diff applies it through the API: a vCPU resize within
  max_vcpus, RAM growth within hotplug_size in 128 MiB DIMMs, the balloon's size, hot-adding and
  removing disks and NICs) or RESTART (needs a new VMM, see the option apply_changes). Options that
  are not VmConfig (state, force, purge, ...) have none.

The other places that describe these options follow this table and are checked against it by tests:
ch_vm's DOCUMENTATION (ansible-test's validate-modules), the vms role's argument_specs
(tests/roles/test_argument_specs.py) and vm_plan.live_diff (tests/unit/test_vm_options.py).

No Ansible imports at module level: spec.py (engine code) reads the table; only
:func:`argument_spec` reaches common.py.
"""


import copy

from ansible_collections.cloudhv.ch.plugins.module_utils import restore_options

LIVE = 'live'
RESTART = 'restart'
ANY = '*'   # extra_config: whatever VmConfig fields it names

RATE = dict(bandwidth=dict(type='int'), iops=dict(type='int'))
CONSOLE = ['off', 'null', 'pty', 'tty', 'file', 'socket']


class Option:
    """One row of the table (see the module's docstring)."""

    __slots__ = ('name', 'spec', 'new', 'keeps', 'vmconfig')

    def __init__(self, name, spec, new=None, keeps=False, vmconfig=None):
        self.name = name
        self.spec = spec
        self.new = spec.get('default') if new is None else new
        self.keeps = keeps
        self.vmconfig = tuple(vmconfig or ())   # ((path, LIVE|RESTART), ...)

    @property
    def change(self):
        """How a change reaches a running VM: LIVE, RESTART, 'partly live' or 'n/a' (not VmConfig)."""
        kinds = set(kind for _path, kind in self.vmconfig)
        if not kinds:
            return 'n/a'
        return kinds.pop() if len(kinds) == 1 else 'partly live'


def _restore_spec():
    spec = restore_options.argument_spec()
    return spec['memory_restore_mode'], spec['prefault']


def _rows():
    mode, prefault = _restore_spec()
    return [
        Option('name', dict(type='str', required=True)),
        Option('state', dict(type='str', default='running',
                             choices=['running', 'present', 'stopped', 'paused', 'restarted', 'absent', 'standby'])),
        Option('clone_from', dict(type='dict', options=dict(
            vm=dict(type='str'), snapshot=dict(type='str'), path=dict(type='path'),
            memory_restore_mode=mode,
            prefault=prefault,
            disks=dict(type='str', default='copy', choices=['copy', 'overlay'])))),
        # Unset (None) keeps the VM's recorded value (a clone's: its source's); a new VM gets ``new``
        # (see spec.normalize).
        Option('cpus', dict(type='int'), new=1, keeps=True,
               vmconfig=[('cpus.boot_vcpus', LIVE)]),           # live up to max_vcpus
        # a new VM's ceiling is its cpus: normalize takes max(cpus, this)
        Option('max_cpus', dict(type='int'), new=1, keeps=True,
               vmconfig=[('cpus.max_vcpus', RESTART)]),
        Option('memory', dict(type='raw'), new='512M', keeps=True,
               vmconfig=[('memory.size', LIVE)]),               # growth within hotplug_size, 128 MiB DIMMs
        Option('memory_hotplug', dict(type='raw'), new=0, keeps=True,
               vmconfig=[('memory.hotplug_size', RESTART)]),
        Option('hugepages', dict(type='bool'), new=False, keeps=True,
               vmconfig=[('memory.hugepages', RESTART)]),
        Option('shared_memory', dict(type='bool'), new=False, keeps=True,
               vmconfig=[('memory.shared', RESTART)]),
        Option('balloon', dict(type='dict', options=dict(     # balloon: {} removes it (unset keeps it)
            size=dict(type='raw'),
            deflate_on_oom=dict(type='bool'),
            free_page_reporting=dict(type='bool'))), keeps=True,
            vmconfig=[('balloon.size', LIVE),                   # of a VM that has a balloon
                      ('balloon.deflate_on_oom', RESTART), ('balloon.free_page_reporting', RESTART),
                      ('balloon', RESTART)]),                   # adding or removing the device
        Option('firmware', dict(type='path'), keeps=True, vmconfig=[('payload.firmware', RESTART)]),
        Option('kernel', dict(type='path'), keeps=True, vmconfig=[('payload.kernel', RESTART)]),
        Option('cmdline', dict(type='str'), keeps=True, vmconfig=[('payload.cmdline', RESTART)]),
        Option('initramfs', dict(type='path'), keeps=True, vmconfig=[('payload.initramfs', RESTART)]),
        Option('disks', dict(type='list', elements='dict', options=dict(
            path=dict(type='path', required=True),
            readonly=dict(type='bool', default=False),
            direct=dict(type='bool', default=False),
            image_type=dict(type='str', choices=['raw', 'qcow2', 'vhdx', 'fixedvhd']),
            id=dict(type='str'),
            serial=dict(type='str'),
            size=dict(type='raw'),
            backing_file=dict(type='path'),
            rate_limit=dict(type='dict', options=RATE))), new=[], keeps=True,
            vmconfig=[('disks', LIVE)]),                        # hot-add/remove (a changed disk: both)
        Option('networks', dict(type='list', elements='dict', options=dict(
            bridge=dict(type='str'),
            tap=dict(type='str'),
            mac=dict(type='str'),
            address=dict(type='str'),
            ip=dict(type='str'),
            mask=dict(type='str'),
            mtu=dict(type='int'),
            num_queues=dict(type='int'),
            id=dict(type='str'),
            rate_limit=dict(type='dict', options=dict(bandwidth=dict(type='int'), pps=dict(type='int'))))),
            new=[], keeps=True, vmconfig=[('net', LIVE)]),
        Option('cloud_init', dict(type='dict', options=dict(
            user_data=dict(type='raw', no_log=True),
            meta_data=dict(type='dict'),
            network_config=dict(type='raw'))), keeps=True,
            vmconfig=[('disks', LIVE)]),                        # its cidata disk, hot-added or removed
        Option('serial', dict(type='str', choices=CONSOLE), new='file', keeps=True,
               vmconfig=[('serial', RESTART)]),
        Option('console', dict(type='str', choices=CONSOLE), new='off', keeps=True,
               vmconfig=[('console', RESTART)]),
        Option('vsock', dict(type='dict', options=dict(cid=dict(type='int'), socket=dict(type='path'))),  # {} removes it
               keeps=True, vmconfig=[('vsock', RESTART)]),
        Option('devices', dict(type='list', elements='path'), new=[], keeps=True,
               vmconfig=[('devices', RESTART)]),
        Option('platform', dict(type='dict', options=dict(
            uuid=dict(type='str'), serial_number=dict(type='str'),
            oem_strings=dict(type='list', elements='str'))), keeps=True,
            vmconfig=[('platform', RESTART)]),
        Option('extra_config', dict(type='dict'), keeps=True, vmconfig=[(ANY, RESTART)]),
        Option('apply_changes', dict(type='str', default='live', choices=['live', 'restart', 'never'])),
        Option('stop_timeout', dict(type='float', default=30.0)),
        Option('force', dict(type='bool', default=False)),
        Option('purge', dict(type='bool', default=False)),
        Option('launcher', dict(type='str', choices=['auto', 'direct', 'systemd']), new='auto', keeps=True),
        Option('autostart', dict(type='bool', default=False)),
    ]


ROWS = _rows()
OPTIONS = dict((row.name, row) for row in ROWS)


def row(option):
    """The table's row of ``option`` (KeyError for a name that is not ch_vm's own option)."""
    return OPTIONS[option]


def new_vm_default(option):
    """A new VM's value of ``option`` when the task leaves it unset (None: it has none).
    A fresh copy: callers may change it."""
    return copy.deepcopy(OPTIONS[option].new)


def keeps_recorded(option):
    """Whether leaving ``option`` unset keeps the VM's recorded value."""
    return OPTIONS[option].keeps


def vmconfig_paths(option):
    """The VmConfig paths ``option`` sets: [(path, LIVE|RESTART)] (empty when it is not VmConfig)."""
    return list(OPTIONS[option].vmconfig)


def live_paths():
    """The VmConfig paths a running VM can take a change of without a restart."""
    return set(path for r in ROWS for path, kind in r.vmconfig if kind == LIVE)


def restart_paths():
    """The VmConfig paths whose changes need a restart (ANY for extra_config's)."""
    return set(path for r in ROWS for path, kind in r.vmconfig if kind == RESTART)


def argument_spec():
    """ch_vm's argument spec: the common options and the table's (a fresh dict on every call)."""
    from ansible_collections.cloudhv.ch.plugins.module_utils.common import common_argument_spec
    return common_argument_spec(**dict((r.name, copy.deepcopy(r.spec)) for r in ROWS))
