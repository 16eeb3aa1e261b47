"""Helpers for the real_ch suite (tests/real_ch): a real Cloud Hypervisor on a KVM host, driven
through real ansible-playbook runs (tests/support/ansible.py run_playbook) exactly as a user would.
Imported by package path (tests.real_ch.realch) so it never collides with other conftest modules.

Environment (see tests/real_ch/README.md):
    CH_BINARY    path of the real cloud-hypervisor binary (unset: the whole suite is skipped)
    CH_REMOTE    path of the real ch-remote (default: ch-remote beside CH_BINARY)
    CH_FIRMWARE, CH_IMAGE  only for test_cloud_image.py: a firmware and an Ubuntu jammy cloud image
    CH_BOOT_TIMEOUT  seconds to wait for a cloud image's login prompt (default 600)
    CH_TEST_SUBNET   the /24 the test bridge and guest use (default 10.213.77.0/24)
    CH_REAL_CH_ALLOW_SIMULATOR=1  accept a CH_BINARY that is not an ELF executable: a dry run of the
                     suite's plumbing against tests/simulator (never a verification of real CH)

Every VM of the main suite boots the test guest of tests/support/testguest.py (a 32-bit PVH kernel
that prints a marker and a counter on its serial port), which runs on any KVM host, including
those where no stock kernel boots.

With CH_BINARY set but the host not ready (no writable /dev/kvm, not root, not a real binary),
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

from tests.support import testguest
from tests.support.ansible import run_playbook

SKIP_REASON = ('real_ch: CH_BINARY is not set. These tests drive a real cloud-hypervisor v53.0 on a KVM '
               'host; set CH_BINARY=/path/to/cloud-hypervisor (and CH_REMOTE, default ch-remote beside it; '
               'see tests/real_ch/README.md)')

# What a cloud image prints on its serial console once it is up: getty's prompt, or cloud-init's
# final message (ours, set in user data, or cloud-init's default one).
BOOTED = re.compile(r'( login: |CLOUDHV-REAL-CH: cloud-init finished|Cloud-init v\. \S+ finished at)')
FINAL_MESSAGE = 'CLOUDHV-REAL-CH: cloud-init finished after $UPTIME seconds'
MIB = 1024 ** 2


def real_ch_requested(config):
    return 'real_ch' in (config.getoption('markexpr', '') or '')


def _is_elf(path):
    try:
        with open(path, 'rb') as handle:
            return handle.read(4) == b'\x7fELF'
    except (IOError, OSError):
        return False


def host_problems(binary, *files):
    """Why this host cannot run the suite with ``binary`` (and the named ``files``: (variable, path))."""
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
    for variable, path in files:
        if not path or not os.path.isfile(path):
            problems.append('%s=%r is not a file' % (variable, path))
    if os.geteuid() != 0:
        problems.append('not root: bridges, taps and nftables need CAP_NET_ADMIN')
    return problems


def read_text(path):
    try:
        with open(path, 'rb') as handle:
            return handle.read().decode('utf-8', 'replace')
    except (IOError, OSError):
        return ''


class RealHost(object):
    """One private host for the suite: its own state_dir, a short run_dir, a test bridge."""

    def __init__(self, tmp_path, binary):
        self.tmp_path = tmp_path
        self.binary = binary
        self.ch_remote = os.environ.get('CH_REMOTE') or os.path.join(os.path.dirname(binary), 'ch-remote')
        self.state_dir = str(tmp_path / 'state')
        # unix socket paths must stay under 108 bytes: keep run_dir short, outside tmp_path
        self.run_dir = tempfile.mkdtemp(prefix='chrt-')
        self.suffix = uuid.uuid4().hex[:6]
        self.bridge = 'chvrt%s' % self.suffix
        self.vm_name = 'rt-%s' % self.suffix
        self.names = []          # every VM name the suite used, for the teardown
        self.snapshots = []      # (vm, snapshot) pairs, likewise
        net = ipaddress.ip_network(os.environ.get('CH_TEST_SUBNET', '10.213.77.0/24'))
        hosts = list(net.hosts())
        self.gateway = '%s/%d' % (hosts[0], net.prefixlen)
        self.guest_ip = str(hosts[1])
        self.guest_cidr = '%s/%d' % (hosts[1], net.prefixlen)
        self.simulated = not _is_elf(binary)  # only with CH_REAL_CH_ALLOW_SIMULATOR=1
        self.kernel = testguest.write(str(tmp_path / 'testguest.elf'))

    @property
    def defaults(self):
        return {'binary': self.binary, 'state_dir': self.state_dir, 'run_dir': self.run_dir}

    def name(self, suffix):
        """A VM name of this suite (remembered for the teardown)."""
        name = '%s-%s' % (self.vm_name, suffix) if suffix else self.vm_name
        if name not in self.names:
            self.names.append(name)
        return name

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
        assert not out.get('failed') and out['_status'] == 'ok', '%s %s failed: %s\nVMM log:\n%s' % (
            module, args.get('name'), out.get('msg', out), self.vmm_log_tail(args.get('name')))
        return out

    def converge(self, module, args, changes=True):
        """The idempotence cycle of every state-changing step: check mode (predicts ``changes``),
        the run (changes), the run again (unchanged), check mode again (unchanged). Returns the
        real run's result."""
        predicted = self.ok(module, args, check=True)
        assert predicted['changed'] is changes, ('check mode predicted', predicted.get('changes'), predicted.get('msg'))
        done = self.ok(module, args)
        assert done['changed'] is changes, ('run', done.get('changes'))
        if changes and 'changes' in predicted:
            assert predicted['changes'] == done['changes'], (predicted['changes'], done['changes'])
        again = self.ok(module, args)
        assert again['changed'] is False, ('second run changed', again.get('changes'))
        after = self.ok(module, args, check=True)
        assert after['changed'] is False, ('check mode after the run', after.get('changes'))
        return done

    def snapshot(self, vm, name, state, check=False, **extra):
        # binary/state_dir/run_dir given explicitly as well as through the action group
        if (vm, name) not in self.snapshots:
            self.snapshots.append((vm, name))
        args = dict(self.defaults, vm=vm, name=name, state=state, **extra)
        return self.ok('cloudhv.ch.ch_snapshot', args, check=check)

    def info(self, name):
        vms = self.ok('cloudhv.ch.ch_vm_info', {'name': name})['vms']
        return vms[0] if vms else None

    def guest_args(self, name, **overrides):
        """A VM booting the test guest: 1 of 2 vCPUs, 128M RAM (+128M hotpluggable), a balloon."""
        args = {
            'name': name,
            'state': 'running',
            'kernel': self.kernel,
            'cmdline': 'console=ttyS0',
            'cpus': 1,
            'max_cpus': 2,
            'memory': '128M',
            'memory_hotplug': '128M',
            'balloon': {'size': 0},
            'stop_timeout': 3,
        }
        args.update(overrides)
        return args

    # ---- the guest's voice: its serial log ----
    def serial_file(self, name):
        return os.path.join(self.state_dir, 'vms', name, 'serial.log')

    def serial(self, name):
        return read_text(self.serial_file(name))

    def ticks(self, name):
        return testguest.ticks(self.serial(name))

    def wait_ticks(self, name, more_than=None, count=2, since=None, timeout=60.0):
        """Wait until the guest printed ``count`` ticks (above ``more_than`` when given) after the
        serial log text ``since`` (a log that no longer starts with it was started anew: all of it
        counts); returns the ticks seen after ``since``. Fails with the serial and VMM logs."""
        deadline = time.time() + timeout
        while True:
            text = self.serial(name)
            if since and text.startswith(since):
                text = text[len(since):]
            ticks = testguest.ticks(text)
            fresh = [t for t in ticks if more_than is None or t > more_than]
            if len(fresh) >= count:
                return ticks
            if time.time() > deadline:
                pytest.fail('%s: no %d new ticks within %ss (after %s); serial log tail:\n%s\nVMM log:\n%s'
                            % (name, count, timeout, more_than, self.serial(name)[-2000:], self.vmm_log_tail(name)))
            time.sleep(0.2)

    def vmm_log_tail(self, name=None):
        path = os.path.join(self.state_dir, 'vms', name or self.vm_name, 'ch.log')
        return read_text(path)[-4000:] or '(no %s)' % path

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
        tasks = []
        for vm, snap in self.snapshots:
            tasks.append(dict(common, name='remove snapshot %s of %s' % (snap, vm), **{
                'cloudhv.ch.ch_snapshot': dict(self.defaults, vm=vm, name=snap, state='absent')}))
        for name in reversed(self.names):
            tasks.append(dict(common, name='remove %s' % name, **{'cloudhv.ch.ch_vm': {
                'name': name, 'state': 'absent', 'purge': True, 'force': True}}))
        tasks.append(dict(common, name='remove the bridge', **{'cloudhv.ch.ch_network': {
            'name': self.bridge, 'state': 'absent', 'force': True}}))
        return tasks

    def last_resort_cleanup(self):
        """Whatever the modules left (a failed run): kill our VMMs, drop the bridge and taps, the dirs."""
        for pid in self.vmm_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        subprocess.run(['ip', 'link', 'del', self.bridge], capture_output=True, check=False)
        shutil.rmtree(self.run_dir, ignore_errors=True)


class CloudImageHost(RealHost):
    """test_cloud_image.py: an Ubuntu cloud image with firmware, cloud-init and a static address."""

    def __init__(self, tmp_path, binary, firmware, image):
        RealHost.__init__(self, tmp_path, binary)
        self.firmware = firmware
        self.image = image
        self.clone_name = self.name('clone')
        self.fork_name = self.name('fork')
        self.linked_name = self.name('linked')
        self.name(None)
        self.boot_timeout = float(os.environ.get('CH_BOOT_TIMEOUT', '600'))

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

    def snapshot(self, name, state, check=False, **extra):
        return RealHost.snapshot(self, self.vm_name, name, state, check=check, **extra)

    def wait_for_boot(self, serial_file, pid):
        """Wait until the serial log shows the guest up; fail early if the VMM dies."""
        deadline = time.time() + self.boot_timeout
        text = ''
        while time.time() < deadline:
            text = read_text(serial_file)
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
