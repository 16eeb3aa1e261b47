"""A table of bad inputs across the modules and roles: each fails with a clear message naming the
option, and the host is exactly as before (files under state_dir/run_dir, with their sizes,
modes and mtimes; links and addresses; the nftables ruleset; processes naming those directories).

Each group of cases is one test and one playbook, in a throwaway network namespace: first the
setup tasks make a realistic host (a bridge with NAT, isolation and egress rules made by
ch_network, a running VM on it with a disk and cloud-init, a snapshot of it), then every case
runs with ignore_errors (module cases) or in a block whose rescue marks the refusal (role cases).
The host_snapshot callback (callback/host_snapshot.py) snapshots the host after every task, so
each case is judged on its own: before it = after the task before it.
"""
import copy
import json
import os
import subprocess

import pytest

from tests.reliability.relutil import SNAPSHOT_CALLBACKS, Host, new_netns, remove_netns
from tests.simulator.mirror import build_mirror
from tests.support.ansible import CALLBACKS, REPO

DROP = object()          # remove this key from the base arguments
UNCLEAR = ('Unexpected error', 'MODULE FAILURE', 'Traceback', 'MODULE_STDOUT')


def web1(host):
    """The running VM every environment has (also the base for cases against an existing VM)."""
    return {'name': 'web1', 'kernel': host.kernel, 'cmdline': 'console=ttyS0', 'cpus': 1, 'max_cpus': 2,
            'disks': [{'path': os.path.join(host.vm_dir('web1'), 'root.raw'), 'size': '16M'}],
            'networks': [{'bridge': 'br0'}], 'cloud_init': {'user_data': {'packages': ['cowsay-xyz']}}}


NETWORK = {'name': 'br0', 'addresses': ['10.99.0.1/24'], 'nat': True, 'uplink': 'up0', 'isolation': True,
           'egress': {'default': 'drop', 'allow': [{'dest': '0.0.0.0/0', 'proto': 'udp', 'ports': [53]}]}}


def bases(host):
    return {
        'new': {'name': 'web2', 'kernel': host.kernel},
        'web1': web1(host),
        'snap': {'vm': 'web1', 'name': 's2'},
        'net': copy.deepcopy(NETWORK),
        'newnet': {'name': 'br1', 'addresses': ['10.98.0.1/24']},
        'none': {},
        'vms': {'cloudhv_binary': host.binary, 'cloudhv_state_dir': host.state_dir, 'cloudhv_run_dir': host.run_dir},
        'preflight': {'cloudhv_binary': host.binary, 'cloudhv_state_dir': host.state_dir,
                      'cloudhv_run_dir': host.run_dir},
        # installs into the jail; the mirror (stand-ins that match no pin) is built by run_group
        'install': {'cloudhv_bin_dir': os.path.join(host.jail, 'bin'), 'cloudhv_firmware_dir': os.path.join(host.jail, 'fw'),
                    # staging is scratch space, created and removed by the role: outside the jail
                    'cloudhv_download_dir': os.path.join(str(host.tmp_path), 'download'), 'cloudhv_install_dependencies': False,
                    'cloudhv_mirror_url': 'file://%s' % os.path.join(str(host.tmp_path), 'mirror')},
    }


MODULES = {'vm': 'cloudhv.ch.ch_vm', 'info': 'cloudhv.ch.ch_vm_info', 'host': 'cloudhv.ch.ch_host_info',
           'snap': 'cloudhv.ch.ch_snapshot', 'net': 'cloudhv.ch.ch_network'}


class Case(object):
    """A module task (``module`` a key of MODULES), or a role run (``role:<name>``, its variables
    in ``args``) wrapped in a block whose rescue marks the refusal."""

    def __init__(self, group, case_id, module, base, args, *fragments):
        self.group = group
        self.id = case_id
        self.role = module.split(':', 1)[1] if module.startswith('role:') else None
        self.module = 'cloudhv.ch.%s (role)' % self.role if self.role else MODULES[module]
        self.base = base
        self.args = args
        self.fragments = fragments

    def tasks(self, host):
        if not self.role:
            return [{'name': self.id, self.module: self.render(host), 'ignore_errors': True}]
        return [{'name': self.id,
                 'block': [{'name': self.id + ' role', 'ansible.builtin.include_role': {'name': 'cloudhv.ch.' + self.role},
                            'vars': self.render(host)}],
                 'rescue': [{'name': self.id + ' refused', 'ansible.builtin.debug': {'msg': 'refused'}}],
                 'always': [{'name': self.id + ' end', 'ansible.builtin.debug': {'msg': 'end'}}]}]

    @property
    def end(self):
        """The name of the last task of the case."""
        return self.id + ' end' if self.role else self.id

    def render(self, host):
        args = copy.deepcopy(bases(host)[self.base])
        for key, value in self.args.items():
            if value is DROP:
                args.pop(key, None)
            else:
                args[key] = _fill(value, host)
        return args


def _fill(value, host):
    if isinstance(value, str):
        return value.format(kernel=host.kernel, firmware=host.firmware, tmp=str(host.tmp_path),
                            state=host.state_dir, run=host.run_dir)
    if isinstance(value, list):
        return [_fill(v, host) for v in value]
    if isinstance(value, dict):
        return dict((k, _fill(v, host)) for k, v in value.items())
    return value


def _disk(**extra):
    disk = {'path': '{tmp}/new.raw', 'size': '16M'}
    disk.update(extra)
    return [disk]


CASES = [
    # -- ch_vm, a new VM: names, types, ranges, paths, conflicts -------------------------------
    Case('vm', 'vm-name-traversal', 'vm', 'new', {'name': '../../escape'}, 'name', 'not a valid name'),
    Case('vm', 'vm-name-slash', 'vm', 'new', {'name': 'a/b'}, 'name', 'not a valid name'),
    Case('vm', 'vm-name-dotdot', 'vm', 'new', {'name': '..'}, 'name', 'not a valid name'),
    Case('vm', 'vm-name-too-long', 'vm', 'new', {'name': 'x' * 49}, 'name', 'not a valid name'),
    Case('vm', 'vm-cpus-type', 'vm', 'new', {'cpus': 'many'}, 'cpus'),
    Case('vm', 'vm-cpus-zero', 'vm', 'new', {'cpus': 0}, 'cpus', 'at least 1'),
    Case('vm', 'vm-cpus-above-max', 'vm', 'new', {'cpus': 4, 'max_cpus': 2}, 'cpus', 'max_cpus'),
    Case('vm', 'vm-memory-word', 'vm', 'new', {'memory': 'lots'}, 'memory', 'not a size'),
    Case('vm', 'vm-memory-fraction', 'vm', 'new', {'memory': '1.5K'}, 'memory', 'MiB'),
    Case('vm', 'vm-balloon-too-big', 'vm', 'new', {'balloon': {'size': '1G'}}, 'balloon.size'),
    Case('vm', 'vm-kernel-relative', 'vm', 'new', {'kernel': 'vmlinux'}, 'kernel', 'absolute'),
    Case('vm', 'vm-kernel-missing', 'vm', 'new', {'kernel': '/nonexistent/vmlinux'}, 'kernel', 'does not exist'),
    Case('vm', 'vm-kernel-and-firmware', 'vm', 'new', {'firmware': '{firmware}'}, 'firmware', 'kernel'),
    Case('vm', 'vm-cmdline-without-kernel', 'vm', 'new', {'kernel': DROP, 'firmware': '{firmware}', 'cmdline': 'x'},
         'cmdline', 'kernel'),
    Case('vm', 'vm-no-payload', 'vm', 'new', {'kernel': DROP}, 'firmware', 'kernel'),
    Case('vm', 'vm-disk-no-path', 'vm', 'new', {'disks': [{'size': '1G'}]}, 'path', 'disks'),
    Case('vm', 'vm-disk-missing-file', 'vm', 'new', {'disks': [{'path': '/nonexistent/d.raw'}]},
         'disks[0].path', 'does not exist'),
    Case('vm', 'vm-disk-size-word', 'vm', 'new', {'disks': _disk(size='huge')}, 'disks[0].size'),
    Case('vm', 'vm-disk-size-and-backing', 'vm', 'new', {'disks': _disk(backing_file='{kernel}')},
         'disks[0]', 'mutually exclusive'),
    Case('vm', 'vm-disk-backing-missing', 'vm', 'new',
         {'disks': [{'path': '{tmp}/o.qcow2', 'backing_file': '/nonexistent/base.img'}]}, 'disks[0].backing_file'),
    Case('vm', 'vm-disk-image-type', 'vm', 'new', {'disks': _disk(image_type='vmdk')}, 'image_type', 'vmdk'),
    Case('vm', 'vm-disk-duplicate-id', 'vm', 'new', {'disks': _disk(id='d') + [{'path': '{tmp}/b.raw', 'size': '1M', 'id': 'd'}]},
         'disks[1].id'),
    Case('vm', 'vm-disk-is-directory', 'vm', 'new', {'disks': [{'path': '{tmp}'}]}, 'disks[0].path', 'directory'),
    Case('vm2', 'vm-net-bridge-and-tap', 'vm', 'new', {'networks': [{'bridge': 'br0', 'tap': 'tap0'}]},
         'networks[0]', 'exactly one'),
    Case('vm2', 'vm-net-bridge-missing', 'vm', 'new', {'networks': [{'bridge': 'nosuchbr'}]},
         'networks[0].bridge', 'does not exist'),
    Case('vm2', 'vm-net-bridge-slash', 'vm', 'new', {'networks': [{'bridge': 'a/b'}]}, 'networks[0].bridge'),
    Case('vm2', 'vm-net-tap-missing', 'vm', 'new', {'networks': [{'tap': 'nosuchtap0'}]},
         'networks[0].tap', 'does not exist'),
    Case('vm2', 'vm-net-mac-multicast', 'vm', 'new', {'networks': [{'bridge': 'br0', 'mac': '01:00:5e:00:00:01'}]},
         'networks[0].mac'),
    Case('vm2', 'vm-net-queues-odd', 'vm', 'new', {'networks': [{'bridge': 'br0', 'num_queues': 3}]},
         'networks[0].num_queues'),
    Case('vm2', 'vm-net-ip-bad', 'vm', 'new', {'networks': [{'bridge': 'br0', 'ip': '10.0.0.300'}]}, 'networks[0].ip'),
    Case('vm2', 'vm-net-mtu-low', 'vm', 'new', {'networks': [{'bridge': 'br0', 'mtu': 10}]}, 'networks[0].mtu'),
    Case('vm2', 'vm-vsock-cid-low', 'vm', 'new', {'vsock': {'cid': 2}}, 'vsock.cid'),
    Case('vm2', 'vm-devices-missing', 'vm', 'new', {'devices': ['/sys/bus/pci/devices/0000:ff:1f.7']}, 'devices[0]'),
    Case('vm2', 'vm-extra-config-type', 'vm', 'new', {'extra_config': 'not-a-dict'}, 'extra_config'),
    Case('vm2', 'vm-extra-config-unknown-key', 'vm', 'new', {'extra_config': {'no_such_field': 1}},
         'extra_config', 'no_such_field'),
    Case('vm2', 'vm-extra-config-unknown-nested', 'vm', 'new', {'extra_config': {'memory': {'no_such_field': 1}}},
         'extra_config', 'no_such_field'),
    Case('vm2', 'vm-ci-user-data-list', 'vm', 'new', {'cloud_init': {'user_data': [1, 2]}}, 'cloud_init.user_data'),
    Case('vm2', 'vm-ci-user-data-bad-yaml', 'vm', 'new', {'cloud_init': {'user_data': '#cloud-config\nusers: [\n'}},
         'cloud_init.user_data', 'YAML'),
    Case('vm2', 'vm-ci-meta-data-type', 'vm', 'new', {'cloud_init': {'meta_data': 'x'}}, 'meta_data'),
    Case('vm2', 'vm-ci-meta-data-empty-id', 'vm', 'new', {'cloud_init': {'meta_data': {'instance-id': ''}}},
         'cloud_init.meta_data.instance-id'),
    Case('vm2', 'vm-ci-unknown-key', 'vm', 'new', {'cloud_init': {'userdata': 'x'}}, 'userdata'),
    Case('vm2', 'vm-unknown-option', 'vm', 'new', {'cpu': 2}, 'cpu'),
    Case('vm2', 'vm-state-choice', 'vm', 'new', {'state': 'on'}, 'state', 'on'),
    Case('vm2', 'vm-serial-and-console-tty', 'vm', 'new', {'serial': 'tty', 'console': 'tty'}, 'console', 'tty'),
    Case('vm2', 'vm-run-dir-too-long', 'vm', 'new', {'run_dir': '{tmp}/' + 'r' * 100}, 'run_dir', '108'),
    Case('vm2', 'vm-clone-from-ghost', 'vm', 'new', {'kernel': DROP, 'clone_from': {'vm': 'ghost'}},
         'clone_from.vm', 'ghost'),
    Case('vm2', 'vm-clone-snapshot-traversal', 'vm', 'new',
         {'kernel': DROP, 'clone_from': {'vm': 'web1', 'snapshot': '../s1'}}, 'clone_from.snapshot'),
    Case('vm2', 'vm-clone-missing-snapshot', 'vm', 'new',
         {'kernel': DROP, 'clone_from': {'vm': 'web1', 'snapshot': 'nosuch'}}, 'clone_from.snapshot'),
    # -- ch_vm against the running VM, ch_vm_info, ch_host_info, ch_snapshot --------------------
    Case('live', 'web1-cpus-above-max', 'vm', 'web1', {'cpus': 3}, 'cpus', 'max_cpus'),
    Case('live', 'web1-extra-config-unknown', 'vm', 'web1', {'extra_config': {'memory': {'no_such_field': 1}}},
         'extra_config', 'no_such_field'),
    Case('live', 'web1-bridge-missing', 'vm', 'web1', {'networks': [{'bridge': 'nosuchbr'}]}, 'networks[0].bridge'),
    Case('live', 'web1-disk-missing', 'vm', 'web1',
         {'disks': [{'path': '{state}/vms/web1/root.raw'}, {'path': '/nonexistent/x.raw'}]}, 'disks[1].path'),
    Case('live', 'web1-ci-user-data-list', 'vm', 'web1', {'cloud_init': {'user_data': [1]}}, 'cloud_init.user_data'),
    Case('live', 'web1-standby-unknown-option', 'vm', 'web1', {'state': 'standby', 'resume': True}, 'resume'),
    Case('live', 'info-name-traversal', 'info', 'none', {'name': '../web1'}, 'name', 'not a valid name'),
    Case('live', 'info-unknown-option', 'info', 'none', {'verbose': True}, 'verbose'),
    Case('live', 'host-api-timeout-type', 'host', 'none', {'api_timeout': 'x'}, 'api_timeout'),
    Case('live', 'host-unknown-option', 'host', 'none', {'kvm': True}, 'kvm'),
    Case('live', 'snap-name-traversal', 'snap', 'snap', {'name': '../../escape'}, 'name', 'not a valid name'),
    Case('live', 'snap-vm-traversal', 'snap', 'snap', {'vm': '../web1'}, 'vm', 'not a valid name'),
    Case('live', 'snap-vm-missing', 'snap', 'snap', {'vm': 'ghost'}, 'vm', 'ghost'),
    Case('live', 'snap-no-name', 'snap', 'snap', {'name': DROP}, 'name'),
    Case('live', 'snap-state-choice', 'snap', 'snap', {'state': 'taken'}, 'state'),
    Case('live', 'snap-prefault-ondemand', 'snap', 'snap',
         {'name': 's1', 'state': 'restored', 'prefault': True, 'memory_restore_mode': 'ondemand'}, 'prefault'),
    Case('live', 'snap-restore-missing', 'snap', 'snap', {'name': 'nosuch', 'state': 'restored'}, 'name', 'nosuch'),
    Case('live', 'snap-path-parent-missing', 'snap', 'snap', {'path': '/nonexistent/dir/s2'}, 'path'),
    # -- ch_network ------------------------------------------------------------------------
    Case('net', 'net-name-slash', 'net', 'newnet', {'name': 'br/1'}, 'name'),
    Case('net', 'net-name-too-long', 'net', 'newnet', {'name': 'b' * 16}, 'name'),
    Case('net', 'net-addr-no-prefix', 'net', 'newnet', {'addresses': ['10.98.0.1']}, 'addresses', 'CIDR'),
    Case('net', 'net-addr-network-address', 'net', 'newnet', {'addresses': ['10.98.0.0/24']}, 'addresses'),
    Case('net', 'net-addr-v6-prefix', 'net', 'newnet', {'addresses': ['fd00::1/129']}, 'addresses'),
    Case('net', 'net-mtu-low', 'net', 'net', {'mtu': 10}, 'mtu'),
    Case('net', 'net-mtu-type', 'net', 'net', {'mtu': 'big'}, 'mtu'),
    Case('net', 'net-mtu-below-ipv6', 'net', 'newnet', {'mtu': 1000, 'addresses': ['fd00:98::1/64']}, 'mtu', '1280'),
    Case('net', 'net-uplink-is-bridge', 'net', 'net', {'uplink': 'br0'}, 'uplink'),
    Case('net', 'net-uplink-missing', 'net', 'net', {'uplink': 'nosuch0'}, 'uplink', 'nosuch0'),
    Case('net', 'net-state-choice', 'net', 'net', {'state': 'up'}, 'state'),
    Case('net', 'net-egress-host-bits', 'net', 'net', {'egress': {'default': 'drop', 'allow': [{'dest': '10.0.0.1/8'}]}},
         'egress.allow[0].dest'),
    Case('net', 'net-egress-port-range', 'net', 'net',
         {'egress': {'default': 'drop', 'allow': [{'dest': '0.0.0.0/0', 'proto': 'tcp', 'ports': [70000]}]}},
         'egress.allow[0].ports'),
    Case('net', 'net-egress-ports-without-proto', 'net', 'net',
         {'egress': {'default': 'drop', 'allow': [{'dest': '0.0.0.0/0', 'ports': [80]}]}}, 'egress.allow[0].ports'),
    Case('net', 'net-egress-proto-choice', 'net', 'net',
         {'egress': {'default': 'drop', 'allow': [{'dest': '0.0.0.0/0', 'proto': 'gre'}]}}, 'proto'),
    Case('net', 'net-egress-unknown-key', 'net', 'net',
         {'egress': {'default': 'drop', 'allow': [{'dest': '0.0.0.0/0', 'port': 80}]}}, 'port'),
    Case('net', 'net-egress-missing-dest', 'net', 'net', {'egress': {'default': 'drop', 'allow': [{'proto': 'tcp'}]}},
         'dest'),
    Case('net', 'net-netns-missing', 'net', 'newnet', {'netns': 'nosuchns'}, 'netns'),
    Case('net', 'net-netns-traversal', 'net', 'newnet', {'netns': '../x'}, 'netns'),
    Case('net', 'net-absent-while-in-use', 'net', 'net', {'state': 'absent'}, 'force'),
    # -- the roles ---------------------------------------------------------------------------
    Case('roles', 'role-vms-name-traversal', 'role:vms', 'vms',
         {'cloudhv_vms': [{'name': '../../escape', 'kernel': '{kernel}'}]}, 'name', 'not a valid name'),
    Case('roles', 'role-vms-cpus-type', 'role:vms', 'vms', {'cloudhv_vms': [{'name': 'web3', 'cpus': 'two'}]}, 'cpus'),
    Case('roles', 'role-vms-unknown-key', 'role:vms', 'vms', {'cloudhv_vms': [{'name': 'web3', 'memroy': '1G'}]},
         'memroy'),
    Case('roles', 'role-vms-missing-name', 'role:vms', 'vms', {'cloudhv_vms': [{'cpus': 1}]}, 'name'),
    Case('roles', 'role-vms-extra-config', 'role:vms', 'vms',
         {'cloudhv_vms': [{'name': 'web3', 'kernel': '{kernel}', 'extra_config': {'bogus': 1}}]}, 'extra_config', 'bogus'),
    Case('roles', 'role-vms-cloud-init-yaml', 'role:vms', 'vms',
         {'cloudhv_vms': [{'name': 'web3', 'kernel': '{kernel}', 'cloud_init': {'user_data': '#cloud-config\nx: [\n'}}]},
         'cloud_init.user_data'),
    Case('roles', 'role-vms-network-cidr', 'role:vms', 'vms',
         {'cloudhv_networks': [{'name': 'br9', 'addresses': ['10.97.0.1']}]}, 'addresses'),
    Case('roles', 'role-vms-network-state', 'role:vms', 'vms', {'cloudhv_networks': [{'name': 'br9', 'state': 'gone'}]},
         'state', 'gone'),
    Case('roles', 'role-install-setcap-type', 'role:install', 'install', {'cloudhv_setcap': 'sometimes'},
         'cloudhv_setcap'),
    Case('roles', 'role-install-arch', 'role:install', 'install', {'cloudhv_arch': 'sparc'}, 'sparc', 'cloudhv_arch'),
    Case('roles', 'role-install-unpinned-version', 'role:install', 'install', {'cloudhv_version': '99.0'},
         'no pinned digest', 'cloudhv_checksums'),
    Case('roles', 'role-install-malformed-digest', 'role:install', 'install',
         {'cloudhv_checksums': {'cloud-hypervisor/v53.0/cloud-hypervisor-static': 'sha256:xyz'}}, 'sha256:xyz'),
    Case('roles', 'role-install-digest-mismatch', 'role:install', 'install', {},
         'not the pinned', 'Nothing was installed'),
    Case('roles', 'role-preflight-nested-type', 'role:preflight', 'preflight', {'cloudhv_require_nested': 'maybe'},
         'cloudhv_require_nested'),
]


class Setup(object):
    """The environment every group of cases runs in: an uplink, then (as the first tasks of the
    group's playbook) a bridge with NAT, isolation and egress rules, a running VM on it with a
    disk and cloud-init, and a snapshot of that VM. Stands before the first case, as its
    ``previous``."""
    end = 'setup snapshot'

    @staticmethod
    def tasks(host):
        for argv in (['link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'up0p'],
                     ['addr', 'add', '192.0.2.1/24', 'dev', 'up0'], ['link', 'set', 'up0p', 'up'],
                     ['link', 'set', 'up0', 'up'], ['route', 'add', 'default', 'via', '192.0.2.254']):
            subprocess.run(['ip', '-n', host.netns] + argv, check=True, capture_output=True, timeout=20)
        return [{'name': 'setup network', 'cloudhv.ch.ch_network': NETWORK},
                {'name': 'setup vm', 'cloudhv.ch.ch_vm': web1(host)},
                {'name': Setup.end, 'cloudhv.ch.ch_snapshot': {'vm': 'web1', 'name': 's1'}}]


def run_group(tmp_path, binary, group):
    """Set up the environment in a fresh namespace and run the group's cases in one playbook.
    Returns (results in order, host snapshots in order, RunResult)."""
    netns = new_netns(bridge=None)
    host = Host(tmp_path, binary, netns=netns, jail=True)
    try:
        cases = [c for c in CASES if c.group == group]
        if any(c.role == 'install' for c in cases):
            build_mirror(str(tmp_path / 'mirror'))
        tasks = Setup.tasks(host) + [t for c in cases for t in c.tasks(host)]
        snapshots = str(host.tmp_path / 'host-snapshots.jsonl')
        env = {'ANSIBLE_CALLBACK_PLUGINS': os.pathsep.join([CALLBACKS, SNAPSHOT_CALLBACKS]),
               'ANSIBLE_CALLBACKS_ENABLED': 'results_file,host_snapshot',
               'CLOUDHV_SNAPSHOT_FILE': snapshots, 'CLOUDHV_SNAPSHOT_DIRS': host.jail}
        res = host.play(tasks, env=env, diff=False, timeout=600)
        with open(snapshots) as handle:
            taken = [json.loads(line) for line in handle]
        statuses = [(r['task'], r['status']) for r in res.results if r['task'].startswith('setup ')]
        assert statuses == [('setup network', 'ok'), ('setup vm', 'ok'), (Setup.end, 'ok')], res
        return res.results, taken, res
    finally:
        host.cleanup()
        remove_netns(netns)


def differences(before, after):
    """Readable differences between two host snapshots."""
    out = []
    for key in ('links', 'addresses', 'nft', 'processes'):
        if before[key] != after[key]:
            out.append('%s: %s -> %s' % (key, json.dumps(before[key])[:1500], json.dumps(after[key])[:1500]))
    files_b, files_a = before['files'], after['files']
    for path in sorted(set(files_b) | set(files_a)):
        if files_b.get(path) != files_a.get(path):
            out.append('file %s: %s -> %s' % (path, files_b.get(path), files_a.get(path)))
    return out


def test_the_table_is_big_enough():
    assert len(CASES) >= 40 and len(set(c.id for c in CASES)) == len(CASES)
    assert set(c.module for c in CASES if not c.role) == set(MODULES.values())
    assert set(c.role for c in CASES if c.role) == set(os.listdir(os.path.join(REPO, 'roles')))


def _messages(result):
    """The task's message and those of its loop items."""
    out = [result.get('msg') or '']
    out.extend(item.get('msg') or '' for item in result.get('results') or [] if isinstance(item, dict))
    return '\n'.join(m for m in out if m)


def _index(entries, name, start=0):
    for index in range(start, len(entries)):
        if entries[index]['task'] == name:
            return index
    return None


def judge(case, previous, results, taken):
    """What is wrong with one case's outcome (empty when it failed clearly and changed nothing).
    ``previous`` is what ran before it in the playbook (the previous case, or Setup)."""
    prev_end = _index(results, previous.end)
    end = _index(results, case.end, prev_end + 1) if prev_end is not None else None
    if end is None:
        return ['no result']
    mine = results[prev_end + 1:end + 1]
    if case.role:
        failed = [r for r in mine if r['status'] == 'failed']
        if not failed or _index(mine, case.id + ' refused') is None:
            return ['the role did not fail: %s' % [(r['task'], r['status']) for r in mine]]
    else:
        failed = [r for r in mine if r['task'] == case.id and r['status'] == 'failed']
        if not failed:
            return ['did not fail: %s' % json.dumps(mine[-1]['result'])[:1000]]
    msg = '\n'.join(_messages(r['result']) for r in failed)
    problems = []
    if [u for u in UNCLEAR if u in msg]:
        problems.append('unclear message: %s' % msg[:1000])
    missing = [f for f in case.fragments if f not in msg]
    if missing:
        problems.append('message does not mention %s: %s' % (missing, msg[:1000]))
    snap_prev = _index(taken, previous.end)
    snap_end = _index(taken, case.end, snap_prev + 1) if snap_prev is not None else None
    if snap_end is None:
        problems.append('no host snapshot')
    else:
        problems.extend(differences(taken[snap_prev]['after'], taken[snap_end]['after']))
    return problems


# One test per group (a playbook run each); every case of the group is judged, and a failure
# lists each bad case with what went wrong.
@pytest.mark.parametrize('group', sorted(set(c.group for c in CASES)))
def test_bad_inputs(tmp_path, sim_binary, group):
    results, taken, run = run_group(tmp_path, sim_binary, group)
    assert results, run
    report = []
    cases = [c for c in CASES if c.group == group]
    for index, case in enumerate(cases):
        previous = cases[index - 1] if index else Setup
        report.extend('%s (%s): %s' % (case.id, case.module, p) for p in judge(case, previous, results, taken))
    assert not report, '\n'.join(report)
