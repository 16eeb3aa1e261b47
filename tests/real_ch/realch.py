"""Helpers for the real_ch suite (tests/real_ch): a real Cloud Hypervisor on a KVM host, driven
through real ansible-playbook runs (tests/support/ansible.py run_playbook) exactly as a user would.
Imported by package path (tests.real_ch.realch) so it never collides with other conftest modules.

Environment (see tests/real_ch/README.md):
    CH_BINARY    path of the real cloud-hypervisor binary (unset: the whole suite is skipped)
    CH_FIRMWARE  firmware that boots the cloud image (rust-hypervisor-firmware's hypervisor-fw)
    CH_IMAGE     an Ubuntu jammy cloud image (jammy-server-cloudimg-amd64.img, qcow2)
    CH_BOOT_TIMEOUT  seconds to wait for the guest's login prompt (default 600)
    CH_TEST_SUBNET   the /24 the test bridge and guest use (default 10.213.77.0/24)
    CH_REAL_CH_ALLOW_SIMULATOR=1  accept a CH_BINARY that is not an ELF executable: a dry run of the
                     suite's plumbing against tests/simulator (never a verification of real CH)

With CH_BINARY set but the host not ready (no writable /dev/kvm, CH_FIRMWARE or CH_IMAGE missing),
the tests fail when real_ch was asked for explicitly (`-m real_ch`), and are skipped otherwise
(a developer who set CH_BINARY only for scripts/demo.sh still gets a green scripts/test.sh).
"""
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import pytest

from tests.support.ansible import run_playbook

SKIP_REASON = ('real_ch: CH_BINARY is not set. These tests boot a real guest with a real '
               'cloud-hypervisor on a KVM host; set CH_BINARY=/path/to/cloud-hypervisor, '
               'CH_FIRMWARE=/path/to/hypervisor-fw and CH_IMAGE=/path/to/jammy-server-cloudimg-amd64.img '
               '(see tests/real_ch/README.md and .github/workflows/real-ch.yml)')

# What the guest prints on its serial console once it is up: getty's prompt, or cloud-init's
# final message (ours, set in user data, or cloud-init's default one).
BOOTED = re.compile(r'( login: |CLOUDHV-REAL-CH: cloud-init finished|Cloud-init v\. \S+ finished at)')
FINAL_MESSAGE = 'CLOUDHV-REAL-CH: cloud-init finished after $UPTIME seconds'


def real_ch_requested(config):
    return 'real_ch' in (config.getoption('markexpr', '') or '')


def _is_elf(path):
    try:
        with open(path, 'rb') as handle:
            return handle.read(4) == b'\x7fELF'
    except (IOError, OSError):
        return False


def host_problems(binary, firmware, image):
    problems = []
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        problems.append('CH_BINARY=%s is not an executable file' % binary)
    elif not _is_elf(binary) and os.environ.get('CH_REAL_CH_ALLOW_SIMULATOR') != '1':
        problems.append('CH_BINARY=%s is not an ELF executable (the CH simulator? the real_ch suite '
                        'verifies real Cloud Hypervisor only)' % binary)
    else:
        try:
            out = subprocess.run([binary, '--version'], capture_output=True, text=True, timeout=30,
                                 check=False).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            out = str(exc)
        if not out.startswith('cloud-hypervisor v'):
            problems.append('%s --version printed %r, not "cloud-hypervisor vX.Y"' % (binary, out[:200]))
    if not os.access('/dev/kvm', os.R_OK | os.W_OK):
        problems.append('/dev/kvm is missing or not read-write for this user')
    if not firmware or not os.path.isfile(firmware):
        problems.append('CH_FIRMWARE=%r is not a file (rust-hypervisor-firmware hypervisor-fw)' % firmware)
    if not image or not os.path.isfile(image):
        problems.append('CH_IMAGE=%r is not a file (an Ubuntu jammy cloud image)' % image)
    if os.geteuid() != 0:
        problems.append('not root: bridges, taps and nftables need CAP_NET_ADMIN')
    return problems


class RealHost(object):
    """One private host for the suite: its own state_dir, a short run_dir, a test bridge."""

    def __init__(self, tmp_path, binary, firmware, image):
        self.tmp_path = tmp_path
        self.binary = binary
        self.firmware = firmware
        self.image = image
        self.state_dir = str(tmp_path / 'state')
        # unix socket paths must stay under 108 bytes: keep run_dir short, outside tmp_path
        self.run_dir = tempfile.mkdtemp(prefix='chrt-')
        suffix = uuid.uuid4().hex[:6]
        self.bridge = 'chvrt%s' % suffix
        self.vm_name = 'rt-%s' % suffix
        self.clone_name = 'rt-%s-clone' % suffix
        self.fork_name = 'rt-%s-fork' % suffix
        self.linked_name = 'rt-%s-linked' % suffix
        net = ipaddress.ip_network(os.environ.get('CH_TEST_SUBNET', '10.213.77.0/24'))
        hosts = list(net.hosts())
        self.gateway = '%s/%d' % (hosts[0], net.prefixlen)
        self.guest_ip = str(hosts[1])
        self.guest_cidr = '%s/%d' % (hosts[1], net.prefixlen)
        self.boot_timeout = float(os.environ.get('CH_BOOT_TIMEOUT', '600'))
        self.simulated = not _is_elf(binary)  # only with CH_REAL_CH_ALLOW_SIMULATOR=1

    @property
    def defaults(self):
        return {'binary': self.binary, 'state_dir': self.state_dir, 'run_dir': self.run_dir}

    def play(self, tasks, check=False, diff=True, timeout=900):
        """A real ansible-playbook run on localhost with the collection's group defaults."""
        return run_playbook(self.tmp_path, tasks=tasks, check=check, diff=diff, timeout=timeout,
                            play_extra={'module_defaults': {'group/cloudhv.ch.ch': self.defaults}})

    def task(self, module, args, check=False, diff=True):
        """Run one task and return its result dict, with the task status under '_status'."""
        res = self.play([{'name': 'step', module: args}], check=check, diff=diff)
        out = res.task('step')
        out['_status'] = [r['status'] for r in res.results if r['task'] == 'step'][-1]
        out['_rc'] = res.rc
        return out

    def ok(self, module, args, check=False, diff=True):
        """Like task(), and the task must not have failed."""
        out = self.task(module, args, check=check, diff=diff)
        assert not out.get('failed'), '%s %s failed: %s' % (module, args.get('name'), out.get('msg', out))
        return out

    def snapshot(self, name, state, check=False):
        # binary/state_dir/run_dir given explicitly as well as through the action group
        args = dict(self.defaults, vm=self.vm_name, name=name, state=state)
        return self.ok('cloudhv.ch.ch_snapshot', args, check=check)

    def info(self, name):
        vms = self.ok('cloudhv.ch.ch_vm_info', {'name': name})['vms']
        return vms[0] if vms else None

    def vm_args(self, **overrides):
        """The suite's VM: a jammy cloud image overlay, cloud-init, one NIC on the test bridge."""
        args = {
            'name': self.vm_name,
            'state': 'running',
            'cpus': 1,
            'max_cpus': 4,
            'memory': '1G',
            'memory_hotplug': '2G',
            'firmware': self.firmware,
            'disks': [{'path': os.path.join(self.state_dir, 'vms', self.vm_name, 'root.qcow2'),
                       'backing_file': self.image}],
            'networks': [{'bridge': self.bridge}],
            'cloud_init': {
                'user_data': {'hostname': self.vm_name, 'final_message': FINAL_MESSAGE},
                'network_config': {
                    'version': 2,
                    'ethernets': {'nic0': {'match': {'name': 'en*'}, 'addresses': [self.guest_cidr]}},
                },
            },
        }
        args.update(overrides)
        return args

    def wait_for_boot(self, serial_file, pid):
        """Wait until the serial log shows the guest up; fail early if the VMM dies."""
        deadline = time.time() + self.boot_timeout
        text = ''
        while time.time() < deadline:
            try:
                with open(serial_file, 'rb') as handle:
                    text = handle.read().decode('utf-8', 'replace')
            except (IOError, OSError):
                text = ''
            match = BOOTED.search(text)
            if match:
                return match.group(1), text
            if pid and not os.path.exists('/proc/%d' % pid):
                break
            time.sleep(2)
        pytest.fail('the guest did not come up within %ss (VMM pid %s %s); serial log tail:\n%s\n'
                    'VMM log tail:\n%s' % (self.boot_timeout, pid,
                                           'alive' if pid and os.path.exists('/proc/%d' % pid) else 'gone',
                                           text[-4000:], self.vmm_log_tail()))
        return None, text

    def vmm_log_tail(self, name=None):
        path = os.path.join(self.state_dir, 'vms', name or self.vm_name, 'ch.log')
        try:
            with open(path, 'rb') as handle:
                return handle.read()[-4000:].decode('utf-8', 'replace')
        except (IOError, OSError):
            return '(no %s)' % path

    def vmm_pids(self):
        """VMM processes of this suite (their command line names our run_dir)."""
        pids = []
        for entry in os.listdir('/proc'):
            if not entry.isdigit():
                continue
            try:
                with open('/proc/%s/cmdline' % entry, 'rb') as handle:
                    argv = handle.read().split(b'\0')
            except (IOError, OSError):
                continue
            if any(self.run_dir.encode() in arg for arg in argv):
                pids.append(int(entry))
        return pids

    def teardown_tasks(self):
        common = {'ignore_errors': True}
        return [
            dict(common, name='remove the linked clone', **{'cloudhv.ch.ch_vm': {
                'name': self.linked_name, 'state': 'absent', 'purge': True, 'force': True}}),
            dict(common, name='remove the snapshot', **{'cloudhv.ch.ch_snapshot': dict(
                self.defaults, vm=self.vm_name, name='s1', state='absent')}),
            dict(common, name='remove the clone', **{'cloudhv.ch.ch_vm': {
                'name': self.clone_name, 'state': 'absent', 'purge': True, 'force': True}}),
            dict(common, name='remove the fork', **{'cloudhv.ch.ch_vm': {
                'name': self.fork_name, 'state': 'absent', 'purge': True, 'force': True}}),
            dict(common, name='remove the VM', **{'cloudhv.ch.ch_vm': {
                'name': self.vm_name, 'state': 'absent', 'purge': True, 'force': True}}),
            dict(common, name='remove the bridge', **{'cloudhv.ch.ch_network': {
                'name': self.bridge, 'state': 'absent', 'force': True}}),
        ]

    def last_resort_cleanup(self):
        """Whatever the modules left (a failed run): kill our VMMs, drop the bridge, the dirs."""
        for pid in self.vmm_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        subprocess.run(['ip', 'link', 'del', self.bridge], capture_output=True, check=False)
        shutil.rmtree(self.run_dir, ignore_errors=True)
