"""Fixtures for the fault-injection suite: the CH simulator as binary, a private host per test
(tests.reliability.relutil.Host), throwaway network namespaces that are always removed."""
import os
import subprocess
import sys
import tempfile

import pytest

from tests.reliability.relutil import Host, new_netns, remove_netns

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope='session')
def sim_binary(tmp_path_factory):
    sys.path.insert(0, os.path.join(REPO, 'tests', 'simulator'))
    from install import install_launcher
    path = str(tmp_path_factory.mktemp('chsim') / 'cloud-hypervisor')
    install_launcher(path)
    return path


@pytest.fixture
def netns():
    name = new_netns()
    try:
        yield name
    finally:
        remove_netns(name)


@pytest.fixture
def host(tmp_path, sim_binary):
    h = Host(tmp_path, sim_binary)
    try:
        yield h
    finally:
        h.cleanup()


@pytest.fixture
def host_ns(tmp_path, sim_binary, netns):
    h = Host(tmp_path, sim_binary, netns=netns)
    try:
        yield h
    finally:
        h.cleanup()


@pytest.fixture
def tmpfs():
    """Mount small tmpfs file systems: tmpfs(size) -> mount point; always unmounted."""
    mounts = []

    def mount(size):
        point = tempfile.mkdtemp(prefix='chv-full-')
        subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%s,mode=0700' % size, 'tmpfs', point],
                       check=True, timeout=30)
        mounts.append(point)
        return point
    try:
        yield mount
    finally:
        for point in mounts:
            subprocess.run(['umount', '-l', point], check=False, timeout=30)
            os.rmdir(point)
