"""Fixtures for the roles' tests: a stand-in release mirror, and running a role as a user would.

    res = run_role(tmp_path, 'install', {'cloudhv_bin_dir': ...}, check=False)
    changed(res) -> names of the tasks that reported a change; failure(res) -> the failed task's msg

Roles run through include_role in a play on localhost (so their meta/argument_specs.yml is
checked first, as in a real play), with the variables as extra vars.
"""
import hashlib
import shutil
import tempfile

import pytest

from tests.simulator.mirror import build_mirror
from tests.support.ansible import run_playbook
from tests.support.netns import throwaway_netns


def run_role(tmp_path, role, role_vars, check=False, netns=None, inventory=None, hosts='localhost', **kw):
    tasks = [{'name': 'role', 'ansible.builtin.include_role': {'name': 'cloudhv.ch.%s' % role}}]
    return run_playbook(tmp_path, tasks=tasks, extra_vars=role_vars, check=check, netns=netns,
                        inventory=inventory, hosts=hosts, **kw)


def changed(res):
    return [r['task'] for r in res.results if r['result'].get('changed')]


def failure(res):
    failed = [r for r in res.results if r['status'] == 'failed']
    assert failed, 'no failed task (rc=%s):\n%s' % (res.rc, res.stdout[-3000:])
    return failed[-1]['result'].get('msg', '')


def sha256(path):
    with open(path, 'rb') as handle:
        return 'sha256:' + hashlib.sha256(handle.read()).hexdigest()


@pytest.fixture(scope='session')
def mirror(tmp_path_factory):
    """(directory, {key: digest}) of a stand-in release mirror (tests/simulator/mirror.py)."""
    root = tmp_path_factory.mktemp('mirror')
    digests = build_mirror(str(root))
    return str(root), digests


@pytest.fixture
def netns():
    """A throwaway network namespace (lo up); every process left in it is killed at the end."""
    with throwaway_netns('chvrole') as name:
        yield name


@pytest.fixture
def short_dir():
    """A directory with a short path, for run_dir (unix socket paths must stay under 108 bytes)."""
    path = tempfile.mkdtemp(prefix='chv-role-')
    yield path
    shutil.rmtree(path, ignore_errors=True)
