"""Fixtures for engine tests: the CH simulator as the binary, and VMMs that are always cleaned up."""
import os
import signal
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, 'tests', 'simulator'))

from ansible_collections.cloudhv.ch.plugins.module_utils.vmm import Vmm  # noqa: E402
from ansible_collections.cloudhv.ch.plugins.module_utils.process import proc_cmdline  # noqa: E402


# stand-ins for a CH binary that misbehaves (shell bodies)
EXITS_AT_ONCE = 'echo "error: unexpected argument found: frobnicate" >&2\nexit 3\n'


@pytest.fixture
def stand_in(tmp_path):
    """stand_in(name, body): an executable shell script playing a broken CH binary; its path."""
    def make(name, body):
        path = tmp_path / name
        path.write_text('#!/bin/sh\n' + body)
        path.chmod(0o755)
        return str(path)
    return make


@pytest.fixture(scope='session')
def sim_binary(tmp_path_factory):
    from install import install_launcher
    path = str(tmp_path_factory.mktemp('sim') / 'cloud-hypervisor')
    install_launcher(path)
    return path


@pytest.fixture
def make_vmm(tmp_path, sim_binary):
    made = []

    def factory(name='vm', binary=None):
        run = tmp_path / 'run'
        run.mkdir(exist_ok=True)
        vmm = Vmm(binary or sim_binary, str(run / ('%s.sock' % name)), str(run / ('%s.pid' % name)),
                  str(tmp_path / ('%s.log' % name)), api_timeout=5)
        made.append(vmm)
        return vmm

    yield factory
    for vmm in made:
        vmm.close()
        pid = vmm.pid()
        if pid is None and vmm._proc is not None and vmm._proc.poll() is None:
            pid = vmm._proc.pid
        if pid is not None and proc_cmdline(pid) is not None:
            os.kill(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


@pytest.fixture
def kernel(tmp_path):
    path = tmp_path / 'vmlinux'
    path.write_bytes(b'\x7fELF fake kernel')
    return str(path)
