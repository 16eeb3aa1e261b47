"""ch_vm ``launcher: systemd`` with a real Cloud Hypervisor under a real systemd (PID 1): the VMM
runs as the transient unit cloudhv-vmm-<name>.service, in that unit's own cgroup; a second run does
not change it; ch_snapshot restores it as a unit again; stopping it leaves no unit behind.

Skipped without CH_BINARY (see conftest.py and README.md) and on hosts whose PID 1 is not systemd
(elsewhere only the fake systemd-run of tests/support/fake_systemd.py is exercised).
"""
import os
import subprocess

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils import vmm
from ansible_collections.cloudhv.ch.plugins.module_utils.autostart import pid1_name

from tests.real_ch.realch import SKIP_REASON

pytestmark = [
    pytest.mark.real_ch,
    pytest.mark.xdist_group('real_ch'),
    pytest.mark.skipif(not os.environ.get('CH_BINARY'), reason=SKIP_REASON),
    pytest.mark.skipif(pid1_name() != 'systemd',
                       reason='launcher=systemd needs systemd as PID 1; this host runs %s' % pid1_name()),
]


def systemctl(*args):
    return subprocess.run(['systemctl', '--no-ask-password'] + list(args), capture_output=True, text=True,
                          check=False).stdout.strip()


def unit_of(pid):
    """The systemd unit whose cgroup holds ``pid`` (last path element of its cgroup)."""
    with open('/proc/%d/cgroup' % pid) as handle:
        return handle.read().strip().splitlines()[-1].rsplit('/', 1)[-1]


def test_launcher_systemd(real_host):
    host = real_host
    name = host.name('sd')
    unit = vmm.unit_name(os.path.join(host.run_dir, '%s.sock' % name), host.state_dir)
    args = host.guest_args(name, launcher='systemd')
    try:
        first = host.ok('cloudhv.ch.ch_vm', args)
        pid = first['vm']['pid']
        assert first['changed'] is True and pid, first
        assert systemctl('show', '--property=MainPID', '--value', unit) == str(pid)
        assert systemctl('is-active', unit) == 'active'
        assert unit_of(pid) == unit            # its own cgroup, not the one of ansible-playbook
        with open(first['vm']['log_file']) as handle:
            assert 'cloudhv.ch: launching' in handle.read()

        again = host.ok('cloudhv.ch.ch_vm', args)
        assert again['changed'] is False and again['vm']['pid'] == pid, again.get('changes')

        host.snapshot(name, 'sd1', 'present')
        host.snapshot(name, 'sd1', 'restored')
        new_pid = host.info(name)['pid']
        assert new_pid and new_pid != pid
        assert systemctl('show', '--property=MainPID', '--value', unit) == str(new_pid)
        assert unit_of(new_pid) == unit
        host.snapshot(name, 'sd1', 'absent')

        stopped = host.ok('cloudhv.ch.ch_vm', dict(args, state='stopped', stop_timeout=10))
        assert stopped['changed'] is True
        assert not os.path.exists('/proc/%d' % new_pid)
        assert systemctl('show', '--property=LoadState', '--value', unit) == 'not-found'
    finally:
        host.play([{'name': 'remove', 'ignore_errors': True, 'cloudhv.ch.ch_vm': {
            'name': name, 'state': 'absent', 'purge': True, 'force': True}}])
        systemctl('stop', unit)
        systemctl('reset-failed', unit)
