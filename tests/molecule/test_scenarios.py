"""The Molecule scenarios of extensions/molecule, run by the test command: `molecule test -s NAME`
from the repository root, as a user would run it.

Each run gets a throwaway network namespace (the scenarios make bridges in the namespace they run
in), its own CLOUDHV_MOLECULE_RUN (the names of the multihost scenario's host namespaces and the
scenarios' directories under build/mol) and its own Molecule ephemeral directory, so concurrent
runs of the suite in one checkout do not meet. Molecule's output goes to a log file; a failing
scenario shows its last lines.
"""
import os
import subprocess
import uuid

import pytest

from tests.support.ansible import BIN, COLLECTIONS, REPO
from tests.support.netns import throwaway_netns

SCENARIOS = ['default', 'multihost']


def _ip(*args):
    return subprocess.run(['ip'] + list(args), capture_output=True, text=True, check=False)


@pytest.fixture
def netns():
    with throwaway_netns('chvmol') as name:
        yield name


@pytest.mark.parametrize('scenario', SCENARIOS)
def test_molecule_scenario(scenario, netns, tmp_path):
    run = uuid.uuid4().hex[:6]
    env = dict(os.environ)
    env.update({
        'ANSIBLE_COLLECTIONS_PATH': COLLECTIONS,
        'PATH': BIN + os.pathsep + env.get('PATH', ''),
        'MOLECULE_EPHEMERAL_DIRECTORY': str(tmp_path / 'ephemeral'),
        'CLOUDHV_MOLECULE_RUN': run,
        'ANSIBLE_NOCOLOR': '1',
        'NO_COLOR': '1',
        'ANSIBLE_FORCE_COLOR': '0',
    })
    log = tmp_path / 'molecule.log'
    with open(str(log), 'w') as out:
        proc = subprocess.run(['ip', 'netns', 'exec', netns, os.path.join(BIN, 'molecule'), 'test', '-s', scenario],
                              cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=900, check=False)
    text = log.read_text()
    assert proc.returncode == 0, 'molecule test -s %s failed (rc %d); log %s:\n%s' % (
        scenario, proc.returncode, log, text[-6000:])
    for step in ('converge', 'idempotence', 'verify', 'destroy'):
        assert '%s: Executed: Successful' % step in text, (step, text[-3000:])
    # destroy removed what the scenario made: its directories, every process that ran from them
    # (VMMs, sshds, the mirror server) and (multihost) the hosts' namespaces
    mol = os.path.join(REPO, 'build', 'mol')
    assert [d for d in os.listdir(mol) if d.endswith('-' + run)] == []
    assert _processes_mentioning(os.path.join(mol, ''), '-%s/' % run) == [], 'left running'
    assert 'cloudhv-mh%s-' % run not in _ip('netns', 'list').stdout


def _processes_mentioning(*texts):
    """The processes whose command line contains every one of ``texts``."""
    found = []
    for pid in os.listdir('/proc'):
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as handle:
                cmdline = handle.read().replace(b'\0', b' ').decode('utf-8', 'replace')
        except (IOError, OSError):
            continue
        if all(text in cmdline for text in texts):
            found.append((int(pid), cmdline))
    return found
