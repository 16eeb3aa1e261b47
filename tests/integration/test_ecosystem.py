# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's place in the Ansible ecosystem: changelog (antsibull-changelog), execution
environment metadata (ansible-builder: requirements.txt, bindep.txt), the docs site, the GitHub
workflows, the real_ch suite's marker and skips, and the README's comparison table. Each file must
parse and the files must agree with each other and with the code."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ast
import configparser
import datetime
import fnmatch
import os
import re
import subprocess
import sys
from importlib import metadata

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support.ansible import BIN, REPO

CHANGELOG_BIN = os.path.join(BIN, 'antsibull-changelog')
# Commands the modules run on the managed host -> the package that ships them, per packaging system.
COMMAND_PACKAGES = {
    'qemu-img': {'dpkg': 'qemu-utils', 'rpm': 'qemu-img'},
    'nft': {'dpkg': 'nftables', 'rpm': 'nftables'},
    'ip': {'dpkg': 'iproute2', 'rpm': 'iproute'},
    'dnsmasq': {'dpkg': 'dnsmasq-base', 'rpm': 'dnsmasq'},
}
# Provided by the collection's install role or the user, never by a distribution package; and
# systemd's own tools, used only with launcher=systemd / autostart, which need a host booted with
# systemd (part of its init system: nothing an execution environment or the collection installs).
NOT_PACKAGED = {'cloud-hypervisor', 'ch-remote', 'systemctl', 'systemd-run'}


def _path(*parts):
    return os.path.join(REPO, *parts)


def _yaml(*parts):
    with open(_path(*parts)) as handle:
        return yaml.safe_load(handle)


def _text(*parts):
    with open(_path(*parts)) as handle:
        return handle.read()


def _run(cmd, **kw):
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=False, **kw)
    assert proc.returncode == 0, 'rc=%s: %s\n%s\n%s' % (proc.returncode, ' '.join(cmd), proc.stdout, proc.stderr)
    return proc


def _changelog_tool():
    if not os.path.exists(CHANGELOG_BIN):
        pytest.skip('antsibull-changelog is not installed in %s (requirements-dev.txt installs it)' % BIN)
    return CHANGELOG_BIN


# -- changelog ---------------------------------------------------------------------------------

def test_changelog_fragments_lint():
    _run([_changelog_tool(), 'lint'])


def test_changelog_yaml_lint():
    _run([_changelog_tool(), 'lint-changelog-yaml', 'changelogs/changelog.yaml'])


def test_changelog_config_matches_the_layout():
    config = _yaml('changelogs', 'config.yaml')
    assert config['notesdir'] == 'fragments' and os.path.isdir(_path('changelogs', 'fragments'))
    assert config['changes_file'] == 'changelog.yaml'
    assert [o['file'] for o in config['output']] == ['CHANGELOG.rst']
    assert config['use_fqcn'] is True
    sections = [name for name, _title in config['sections']]
    for name in ('major_changes', 'minor_changes', 'bugfixes', 'known_issues', 'security_fixes'):
        assert name in sections


def test_changelog_fragments_use_known_sections():
    config = _yaml('changelogs', 'config.yaml')
    known = {name for name, _title in config['sections']}
    known |= {config['prelude_section_name'], config['trivial_section_name']}
    directory = _path('changelogs', 'fragments')
    for entry in sorted(os.listdir(directory)):
        if not entry.endswith(('.yml', '.yaml')):
            continue
        with open(os.path.join(directory, entry)) as handle:
            fragment = yaml.safe_load(handle)
        assert isinstance(fragment, dict) and fragment, entry
        assert set(fragment) <= known, (entry, set(fragment) - known)


def test_releases_are_dated_no_later_than_today_and_match_galaxy_yml():
    changes = _yaml('changelogs', 'changelog.yaml')
    galaxy = Version(_yaml('galaxy.yml')['version'])
    today = datetime.date.today()
    for version, release in (changes.get('releases') or {}).items():
        date = datetime.date.fromisoformat(str(release['release_date']))
        assert date <= today, 'release %s is dated %s, after today' % (version, date)
        assert Version(version) <= galaxy, 'changelog release %s is newer than galaxy.yml %s' % (version, galaxy)


def test_changelog_rst_is_generated_from_changelog_yaml(tmp_path):
    """CHANGELOG.rst is what `antsibull-changelog generate` makes of changelogs/changelog.yaml."""
    changes = _yaml('changelogs', 'changelog.yaml')
    if not changes.get('releases'):
        assert not os.path.exists(_path('CHANGELOG.rst')), 'CHANGELOG.rst without any release in changelog.yaml'
        return
    out = str(tmp_path / 'CHANGELOG.rst')
    _run([_changelog_tool(), 'generate', '--output', out, '--output-format', 'rst'])
    with open(out) as handle:
        assert handle.read() == _text('CHANGELOG.rst'), 'CHANGELOG.rst is stale: run antsibull-changelog generate'


# -- execution environment ---------------------------------------------------------------------

def _requirements():
    reqs = {}
    for line in _text('requirements.txt').splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            req = Requirement(line)
            reqs[canonicalize_name(req.name)] = req
    return reqs


def _python_files(*top):
    for root, _dirs, files in os.walk(_path(*top)):
        for name in files:
            if name.endswith('.py'):
                yield os.path.join(root, name)


def _third_party_imports():
    """Top-level names of the modules that plugins/ imports from outside the stdlib and Ansible."""
    found = {}
    for path in _python_files('plugins'):
        with open(path) as handle:
            tree = ast.parse(handle.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split('.')[0]
                if top in sys.stdlib_module_names or top in ('__future__', 'ansible', 'ansible_collections'):
                    continue
                found.setdefault(top, set()).add(os.path.relpath(path, REPO))
    return found


def _distributions(module):
    """The installed distributions that provide the top-level module."""
    return {canonicalize_name(d) for d in metadata.packages_distributions().get(module, [])}


def test_execution_environment_metadata_references_existing_shipped_files():
    meta = _yaml('meta', 'execution-environment.yml')
    assert meta['version'] in (1, 3)
    deps = meta['dependencies']
    assert deps['python'] == 'requirements.txt' and deps['system'] == 'bindep.txt'
    ignored = _yaml('galaxy.yml').get('build_ignore') or []
    for rel in (deps['python'], deps['system'], 'meta/execution-environment.yml'):
        assert os.path.isfile(_path(rel)), rel
        # ansible-builder reads them from the installed collection: they must ship in the tarball
        assert not [pat for pat in ignored if fnmatch.fnmatch(rel, pat) or rel.startswith(pat.rstrip('/') + '/')], rel


def test_every_third_party_import_is_in_requirements_txt():
    reqs = _requirements()
    imports = _third_party_imports()
    assert imports, 'found no third-party import in plugins/: the scan is broken'
    for module, files in sorted(imports.items()):
        dists = _distributions(module)
        assert dists, '%s (imported by %s) is not installed: add it to requirements.txt' % (module, sorted(files))
        assert dists & set(reqs), '%s (distribution %s, imported by %s) is missing from requirements.txt' % (
            module, sorted(dists), sorted(files))


def test_every_requirement_is_imported_and_has_a_lower_bound():
    reqs = _requirements()
    provided = set()
    for module in _third_party_imports():
        provided |= _distributions(module)
    for name, req in reqs.items():
        assert name in provided, '%s is in requirements.txt but nothing in plugins/ imports it' % name
        assert any(spec.operator in ('>=', '~=', '==') for spec in req.specifier), '%s needs a lower bound' % req


def _bindep_entries():
    """bindep.txt as (package, [selectors]) pairs (the subset of bindep's syntax we use)."""
    entries = []
    for line in _text('bindep.txt').splitlines():
        line = line.split('#', 1)[0].strip()
        if not line:
            continue
        match = re.match(r'^([A-Za-z0-9][A-Za-z0-9+._-]*)(?:\s+\[([^\]]*)\])?$', line)
        assert match, 'bindep.txt: cannot parse %r' % line
        entries.append((match.group(1), (match.group(2) or '').split()))
    return entries


def _bindep_packages(platform):
    out = set()
    for package, selectors in _bindep_entries():
        platforms = [s for s in selectors if s.startswith('platform:')]
        if not platforms or 'platform:%s' % platform in platforms:
            out.add(package)
    return out


def _commands_and_dependencies():
    """Commands the plugins look up (find_binary / shutil.which) and MissingDependency names."""
    commands, missing = set(), set()
    for path in _python_files('plugins'):
        with open(path) as handle:
            tree = ast.parse(handle.read(), path)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', None)
            if name in ('find_binary', 'which'):
                commands.add(node.args[0].value)
            elif name == 'MissingDependency':
                missing.add(node.args[0].value)
    return commands, missing


def test_bindep_covers_every_command_the_modules_run():
    entries = _bindep_entries()
    for package, selectors in entries:
        platforms = [s for s in selectors if s.startswith('platform:')]
        assert set(platforms) <= {'platform:dpkg', 'platform:rpm'}, (package, selectors)
    commands, _missing = _commands_and_dependencies()
    commands -= NOT_PACKAGED
    assert commands, 'found no command lookup in plugins/: the scan is broken'
    for command in sorted(commands):
        assert command in COMMAND_PACKAGES, (
            'plugins/ run %r: add its packages to bindep.txt and COMMAND_PACKAGES here' % command)
        for platform, package in COMMAND_PACKAGES[command].items():
            assert package in _bindep_packages(platform), '%s needs %s in bindep.txt [platform:%s]' % (
                command, package, platform)


def test_bindep_parses_with_bindep():
    """bindep itself (requirements-dev.txt) reads bindep.txt as this file's own parser does."""
    from bindep.depends import Depends  # pylint: disable=import-outside-toplevel
    depends = Depends(_text('bindep.txt'))
    for platform in ('dpkg', 'rpm'):
        active = {rule[0] for rule in depends.active_rules(['platform:%s' % platform, 'default'])}
        assert active == _bindep_packages(platform), platform


def test_every_missing_dependency_is_declared():
    """Each MissingDependency the modules can raise names a requirement or a bindep command."""
    reqs = set(_requirements())
    _commands, missing = _commands_and_dependencies()
    for name in sorted(missing):
        assert canonicalize_name(name) in reqs or name in COMMAND_PACKAGES or name in NOT_PACKAGED, name


def test_bootstrap_installs_the_dpkg_packages_of_bindep():
    """scripts/lib.sh (the test and demo bootstrap) installs what bindep.txt declares for dpkg."""
    lib = _text('scripts', 'lib.sh')
    for package in _bindep_packages('dpkg'):
        assert re.search(r'need_deb \S+ %s$' % re.escape(package), lib, re.M), package


# -- docs site ---------------------------------------------------------------------------------

def test_make_docs_runs_scripts_docs_sh():
    makefile = _text('Makefile')
    assert re.search(r'^docs:\n\tbash scripts/docs\.sh$', makefile, re.M), 'make docs must run scripts/docs.sh'
    script = _path('scripts', 'docs.sh')
    assert os.access(script, os.X_OK)
    text = _text('scripts', 'docs.sh')
    assert 'antsibull-docs' in text and 'sphinx-build' in text and 'build/docs' in text
    for line in _text('requirements-docs.txt').splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            assert any(s.operator == '>=' for s in Requirement(line).specifier), line
    assert 'make docs' in _text('README.md')


# -- GitHub workflows --------------------------------------------------------------------------

def _workflow(name):
    flow = _yaml('.github', 'workflows', name)
    assert flow.get('on') or flow.get(True), '%s has no triggers' % name
    return flow


def _steps(flow):
    for job in flow['jobs'].values():
        yield from job['steps']


def _make_targets():
    return set(re.findall(r'^([A-Za-z0-9_-]+):', _text('Makefile'), re.M))


def test_workflows_reference_what_exists():
    targets = _make_targets()
    for name in sorted(os.listdir(_path('.github', 'workflows'))):
        flow = _workflow(name)
        for step in _steps(flow):
            run = step.get('run', '')
            for script in re.findall(r'\b(scripts/[\w.-]+\.sh)\b', run):
                assert os.path.isfile(_path(script)), (name, script)
            for target in re.findall(r'\bmake (\w+)', run):
                assert target in targets, (name, target)
            for path in re.findall(r'\b(tests/[\w/]+)\b', run):
                assert os.path.exists(_path(path)), (name, path)


def test_ci_workflow_runs_the_test_command():
    flow = _workflow('ci.yml')
    triggers = flow.get('on') or flow.get(True)
    assert 'push' in triggers and 'pull_request' in triggers
    runs = ' '.join(step.get('run', '') for step in _steps(flow))
    assert 'sudo' in runs and 'bash scripts/test.sh' in runs
    assert all(job['runs-on'] == 'ubuntu-latest' for job in flow['jobs'].values())


def test_real_ch_workflow():
    flow = _workflow('real-ch.yml')
    triggers = flow.get('on') or flow.get(True)
    assert 'pull_request' not in triggers and 'pull_request_target' not in triggers, \
        'self-hosted KVM runners must not run code from pull requests'
    (job,) = flow['jobs'].values()
    assert {'self-hosted', 'kvm'} <= set(job['runs-on'])
    runs = '\n'.join(step.get('run', '') for step in _steps(flow))
    assert '/dev/kvm' in runs
    assert 'role: cloudhv.ch.install' in runs or 'playbooks/install.yml' in runs
    assert 'jammy-server-cloudimg-amd64.img' in str(flow['env']) and 'sha256sum -c' in runs
    assert re.search(r'\bpytest -m real_ch tests/real_ch\b', runs)
    for var in ('CH_BINARY', 'CH_FIRMWARE', 'CH_IMAGE'):
        assert '%s="$%s"' % (var, var) in runs, var
    assert flow['env']['CH_BINARY'] == '/usr/local/bin/cloud-hypervisor'


# -- the real_ch suite -------------------------------------------------------------------------

def test_real_ch_marker_is_registered():
    config = configparser.ConfigParser()
    config.read(_path('pytest.ini'))
    markers = [line.split(':')[0].strip() for line in config['pytest']['markers'].splitlines() if line.strip()]
    assert 'real_ch' in markers


def test_real_ch_suite_is_skipped_without_ch_binary(tmp_path):
    """Here (no CH_BINARY) every real_ch test is skipped, with the reason, and none passes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('CH_') and not k.startswith('PYTEST_')}
    proc = subprocess.run([sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider',
                           '-m', 'real_ch', '-rs', '-q', '--basetemp', str(tmp_path / 'base'), 'tests/real_ch'],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    summary = out.strip().splitlines()[-1]
    assert re.search(r'^\d+ skipped(, \d+ warnings?)? in ', summary), summary
    assert 'passed' not in summary and 'failed' not in summary and 'error' not in summary, summary
    assert 'CH_BINARY is not set' in out


# -- README ------------------------------------------------------------------------------------

def test_readme_compares_with_the_peers():
    readme = _text('README.md')
    section = readme.split('## How it compares', 1)
    assert len(section) == 2, 'README.md has no "How it compares" section'
    body = section[1].split('\n## ', 1)[0]
    for peer in ('community.libvirt', 'community.proxmox', '`virt`', '`proxmox_kvm`'):
        assert peer in body, peer
    for feature in ('Cloud Hypervisor', 'check mode', 'diff', 'snapshot', 'clone', 'cloud-init',
                    'resize', 'egress', 'crash'):
        assert feature.lower() in body.lower(), feature
    assert 'Benchmark figures: see bench/RESULTS.md' in body


def test_changelog_tool_is_a_dev_requirement():
    """The test command lints the fragments: requirements-dev.txt installs antsibull-changelog."""
    reqs = [Requirement(line.split('#', 1)[0].strip()) for line in _text('requirements-dev.txt').splitlines()
            if line.split('#', 1)[0].strip() and not line.startswith('-r')]
    (tool,) = [r for r in reqs if canonicalize_name(r.name) == 'antsibull-changelog']
    assert any(s.operator == '>=' for s in tool.specifier)
