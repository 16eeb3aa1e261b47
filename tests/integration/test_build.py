# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release artifact: `ansible-galaxy collection build` of the repository gives a clean
tarball, which installs offline and works from its install location (not the repo link)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import subprocess
import tarfile

import pytest
import yaml

from tests.support.ansible import BIN, REPO, ansible_env, run_adhoc

# Path components that must never ship: the virtualenv, build output (with the repo link inside
# it), git metadata, caches and test output.
FORBIDDEN = {'.venv', 'build', '.git', '__pycache__', '.pytest_cache', '.ansible', '.cache'}


def _galaxy():
    with open(os.path.join(REPO, 'galaxy.yml')) as handle:
        return yaml.safe_load(handle)


def _run(cmd, tmp_path, env=None, timeout=300):
    proc = subprocess.run(cmd, env=env or ansible_env(tmp_path), cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, 'rc=%s\n%s\n%s' % (proc.returncode, proc.stdout, proc.stderr)
    return proc


@pytest.fixture(scope='module')
def tarball(tmp_path_factory):
    work = tmp_path_factory.mktemp('build')
    out = work / 'dist'
    _run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'build', '--output-path', str(out),
          REPO], work)
    built = sorted(os.listdir(str(out)))
    assert built == ['cloudhv-ch-0.1.0.tar.gz'], built
    return str(out / built[0])


def test_tarball_name_matches_galaxy_yml(tarball):
    meta = _galaxy()
    assert os.path.basename(tarball) == '%s-%s-%s.tar.gz' % (meta['namespace'], meta['name'],
                                                             meta['version'])


def test_tarball_content_is_clean(tarball):
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile('MANIFEST.json'))
    bad = [n for n in names
           if FORBIDDEN & set(n.split('/')) or n.endswith('.pyc') or n.startswith('tests/output')]
    assert bad == []
    for required in ('MANIFEST.json', 'FILES.json', 'meta/runtime.yml',
                     'plugins/modules/ch_host_info.py', 'plugins/module_utils/hostinfo.py',
                     'plugins/doc_fragments/common.py'):
        assert required in names
    info = manifest['collection_info']
    assert (info['namespace'], info['name'], info['version']) == ('cloudhv', 'ch', '0.1.0')


def test_install_offline_and_run_from_the_install(tarball, tmp_path):
    dest = tmp_path / 'collections'
    # A galaxy server nobody listens on: the offline install must not need one.
    env = ansible_env(tmp_path, {'ANSIBLE_GALAXY_SERVER': 'http://127.0.0.1:9/',
                                 'ANSIBLE_COLLECTIONS_PATH': str(dest)})
    _run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'install', '--offline',
          '-p', str(dest), tarball], tmp_path, env=env)
    installed = dest / 'ansible_collections' / 'cloudhv' / 'ch'
    assert (installed / 'plugins' / 'modules' / 'ch_host_info.py').is_file()
    assert not installed.is_symlink()
    with open(str(installed / 'MANIFEST.json')) as handle:
        assert json.load(handle)['collection_info']['version'] == '0.1.0'

    # the installed files are exactly what the manifest lists
    _run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'verify', '--offline',
          '-p', str(dest), 'cloudhv.ch'], tmp_path, env=env)

    # the module resolves to the installed copy, not to build/collections (the repo link)
    doc = _run([os.path.join(BIN, 'ansible-doc'), 'cloudhv.ch.ch_host_info'], tmp_path, env=env)
    first = doc.stdout.splitlines()[0]
    assert str(installed / 'plugins' / 'modules' / 'ch_host_info.py') in first, first

    res = run_adhoc(tmp_path, 'cloudhv.ch.ch_host_info', 'state_dir=%s' % (tmp_path / 'state'),
                    env={'ANSIBLE_COLLECTIONS_PATH': str(dest)})
    assert res.rc == 0, res
    assert res.results[-1]['status'] == 'ok', res
    assert res.result['changed'] is False
    assert res.result['host']['state_dir'] == str(tmp_path / 'state')
    assert 'kvm_module' in res.result['host']
