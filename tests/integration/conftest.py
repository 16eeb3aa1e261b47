"""Fixtures for integration tests: the CH simulator as binary, a private state/run dir, netns."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, 'tests', 'simulator'))

from ansible_collections.cloudhv.ch.plugins.module_utils.process import proc_cmdline  # noqa: E402
from tests.support.ansible import run_adhoc, run_playbook  # noqa: E402
from tests.support.sim import stand_in_payloads  # noqa: E402


@pytest.fixture(scope='session')
def sim_binary():
    from install import install_launcher
    directory = tempfile.mkdtemp(prefix='chv-sim-')
    path = os.path.join(directory, 'cloud-hypervisor')
    install_launcher(path)
    yield path
    shutil.rmtree(directory, ignore_errors=True)


class Hypervisor(object):
    """One test's private host: state_dir, a short run_dir (socket paths < 108 bytes), payloads."""

    def __init__(self, tmp_path, binary, netns=None):
        self.tmp_path = tmp_path
        self.binary = binary
        self.netns = netns
        self.state_dir = str(tmp_path / 'state')
        self.run_dir = tempfile.mkdtemp(prefix='chv-run-')
        self.kernel, self.firmware = stand_in_payloads(tmp_path)
        self.env = {}

    @property
    def defaults(self):
        return {'binary': self.binary, 'state_dir': self.state_dir, 'run_dir': self.run_dir}

    def play(self, tasks, check=False, diff=True, env=None, **kw):
        merged = dict(self.env)
        merged.update(env or {})
        return run_playbook(self.tmp_path, tasks=tasks, check=check, diff=diff, env=merged,
                            netns=self.netns,
                            play_extra={'module_defaults': {'group/cloudhv.ch.ch': self.defaults}}, **kw)

    def task(self, module, check=False, diff=True, env=None, **args):
        """Run one task of ``module`` (a FQCN) and return its result dict, with the play's return
        code as ``_rc`` and the task's status as ``_status``."""
        res = self.play([{'name': 'task', module: args}], check=check, diff=diff, env=env)
        out = res.task('task')
        out['_rc'] = res.rc
        out['_status'] = [r['status'] for r in res.results if r['task'] == 'task'][-1]
        return out

    def vm(self, check=False, diff=True, env=None, **args):
        """Run one ch_vm task (see task)."""
        return self.task('cloudhv.ch.ch_vm', check=check, diff=diff, env=env, **args)

    def info(self, name=None):
        args = {'name': name} if name else {}
        return self.play([{'name': 'info', 'cloudhv.ch.ch_vm_info': args}]).task('info')['vms']

    def adhoc(self, module, args, check=False, env=None):
        merged = dict(self.env)
        merged.update(env or {})
        full = dict(self.defaults)
        full.update(args)
        return run_adhoc(self.tmp_path, module, ' '.join('%s=%s' % kv for kv in full.items()),
                         check=check, env=merged, netns=self.netns)

    def pid(self, name):
        try:
            with open(os.path.join(self.run_dir, '%s.pid' % name)) as handle:
                return int(handle.read())
        except (IOError, OSError, ValueError):
            return None

    def files(self):
        """Every path under state_dir and run_dir (for 'nothing changed on the host')."""
        out = set()
        for top in (self.state_dir, self.run_dir):
            for root, dirs, files in os.walk(top):
                for entry in dirs + files:
                    out.add(os.path.join(root, entry))
        return out

    def cleanup(self):
        for entry in os.listdir(self.run_dir):
            if entry.endswith('.pid'):
                try:
                    pid = int(open(os.path.join(self.run_dir, entry)).read())
                except (IOError, OSError, ValueError):
                    continue
                argv = proc_cmdline(pid)
                if argv and any(self.run_dir in a for a in argv):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.run_dir, ignore_errors=True)


@pytest.fixture
def hv(tmp_path, sim_binary):
    host = Hypervisor(tmp_path, sim_binary)
    yield host
    host.cleanup()


def ip(*args, check=True):
    return subprocess.run(['ip'] + list(args), capture_output=True, text=True, check=check)


@pytest.fixture
def netns():
    """A throwaway network namespace with a bridge br0 (up); always removed."""
    name = 'chvt-%s' % uuid.uuid4().hex[:8]
    ip('netns', 'add', name)
    try:
        ip('-n', name, 'link', 'set', 'lo', 'up')
        ip('-n', name, 'link', 'add', 'br0', 'type', 'bridge')
        ip('-n', name, 'link', 'set', 'br0', 'up')
        yield name
    finally:
        ip('netns', 'pids', name, check=False)
        pids = ip('netns', 'pids', name, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        ip('netns', 'del', name, check=False)


@pytest.fixture
def hv_ns(tmp_path, sim_binary, netns):
    host = Hypervisor(tmp_path, sim_binary, netns=netns)
    yield host
    host.cleanup()
