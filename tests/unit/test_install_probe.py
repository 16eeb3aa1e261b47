"""roles/install/files/cloudhv_probe.py: the dependency plan (pure logic, with the interpreter's
situation and apt's answers faked) and the file digests."""
import hashlib
import importlib.util
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROBE = os.path.join(REPO, 'roles', 'install', 'files', 'cloudhv_probe.py')
SPEC = importlib.util.spec_from_file_location('cloudhv_probe', PROBE)
probe = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(probe)

PACKAGES = {'qemu-img': 'qemu-utils', 'nft': 'nftables', 'ip': 'iproute2', 'httpx': 'python3-httpx',
            'pyroute2': 'python3-pyroute2', 'pycdlib': 'python3-pycdlib'}


@pytest.fixture
def host(monkeypatch):
    """A fake target: installed libraries, commands, venv/system interpreter, apt candidates."""
    state = {'libs': {}, 'tools': set(), 'venv': False, 'managed': True, 'apt': {}}

    def lib_version(name):
        return state['libs'].get(name)

    def apt_candidate(package):
        return state['apt'].get(package)

    monkeypatch.setattr(probe, 'lib_version', lib_version)
    monkeypatch.setattr(probe, 'which', lambda tool: '/usr/bin/' + tool if tool in state['tools'] else None)
    monkeypatch.setattr(probe, 'in_venv', lambda: state['venv'])
    monkeypatch.setattr(probe, 'externally_managed', lambda: state['managed'] and not state['venv'])
    monkeypatch.setattr(probe, 'apt_candidate', apt_candidate)
    return state


def request(method='auto', family='Debian', **extra):
    out = {'requirements': {'httpx': '0.27', 'pyroute2': '0.7.12', 'pycdlib': '1.14'},
           'tools': ['qemu-img', 'nft', 'ip'], 'packages': PACKAGES, 'method': method, 'os_family': family}
    out.update(extra)
    return out


@pytest.mark.parametrize('text,expected', [
    ('0.28.1', (0, 28, 1)), ('1:0.23.3-1+deb12u1', (0, 23, 3)), ('1.12.0+ds1-4+deb12u1', (1, 12, 0)),
    ('0.7.12', (0, 7, 12)), ('2.0~rc1', (2, 0)), (None, ())])
def test_version_tuple(text, expected):
    assert probe.version_tuple(text) == expected


def test_everything_there_means_nothing_to_install(host):
    host.update(libs={'httpx': '0.28.1', 'pyroute2': '0.9.7', 'pycdlib': '1.22.0'}, tools={'qemu-img', 'nft', 'ip'})
    plan = probe.plan(request())
    assert (plan['os_packages'], plan['pip_packages'], plan['errors']) == ([], [], [])
    assert 'httpx 0.28.1' in plan['satisfied'] and 'nft' in plan['satisfied']


def test_missing_commands_come_from_the_distribution(host):
    host.update(libs={'httpx': '0.28.1', 'pyroute2': '0.9.7', 'pycdlib': '1.22.0'}, tools={'ip'})
    plan = probe.plan(request())
    assert plan['os_packages'] == ['nftables', 'qemu-utils'] and plan['errors'] == []


def test_a_command_without_a_known_package_is_an_error(host):
    host.update(libs={'httpx': '0.28.1', 'pyroute2': '0.9.7', 'pycdlib': '1.22.0'}, tools=set())
    plan = probe.plan(request(family='Gentoo', packages={}))
    assert len(plan['errors']) == 3 and 'cloudhv_dependency_packages' in plan['errors'][0]


def test_virtualenv_gets_pip(host):
    host.update(venv=True, libs={'httpx': '0.23.0'}, tools={'qemu-img', 'nft', 'ip'})
    plan = probe.plan(request())
    assert plan['pip_packages'] == ['httpx>=0.27', 'pycdlib>=1.14', 'pyroute2>=0.7.12']
    assert plan['os_packages'] == [] and plan['errors'] == []


def test_system_python_gets_recent_enough_distribution_packages(host):
    host.update(tools={'qemu-img', 'nft', 'ip'},
                apt={'python3-httpx': '0.27.2-1', 'python3-pyroute2': '0.7.12-1', 'python3-pycdlib': '1.14.0-1'})
    plan = probe.plan(request())
    assert plan['os_packages'] == ['python3-httpx', 'python3-pycdlib', 'python3-pyroute2']
    assert plan['pip_packages'] == [] and plan['errors'] == []


def test_debian12_packages_are_too_old_and_pip_may_not_touch_the_system_python(host):
    """Debian 12: python3-httpx 0.23.3, python3-pyroute2 0.7.2, python3-pycdlib 1.12.0."""
    host.update(tools={'qemu-img', 'nft', 'ip'},
                apt={'python3-httpx': '0.23.3-1', 'python3-pyroute2': '0.7.2-2', 'python3-pycdlib': '1.12.0+ds1-4'})
    plan = probe.plan(request())
    assert plan['os_packages'] == [] and plan['pip_packages'] == []
    assert len(plan['errors']) == 3
    assert 'python3-httpx 0.23.3-1 is older than 0.27' in plan['errors'][0]
    assert 'use a virtualenv as ansible_python_interpreter' in plan['errors'][0]
    # allowed to break the system packages: pip instead
    plan = probe.plan(request(break_system_packages=True))
    assert plan['pip_packages'] == ['httpx>=0.27', 'pycdlib>=1.14', 'pyroute2>=0.7.12'] and plan['errors'] == []


def test_explicit_methods(host):
    host.update(tools={'qemu-img', 'nft', 'ip'}, libs={'httpx': '0.28.1', 'pyroute2': '0.9.7'})
    assert probe.plan(request(method='none'))['errors'] == [
        '%s needs pycdlib>=1.14 (missing) and cloudhv_python_deps is none' % probe.sys.executable]
    host['apt'] = {'python3-pycdlib': None}
    plan = probe.plan(request(method='distro'))
    assert 'python3-pycdlib is not available' in plan['errors'][0]
    host['venv'] = True
    assert probe.plan(request(method='distro', packages={}))['errors']  # no package known, no pip fallback
    assert probe.plan(request(method='pip'))['pip_packages'] == ['pycdlib>=1.14']


def test_file_facts(tmp_path):
    path = tmp_path / 'fw'
    path.write_bytes(b'firmware')
    os.chmod(str(path), 0o640)
    expected = {'exists': True, 'mode': '0640', 'digest': hashlib.sha1(b'firmware').hexdigest()}
    assert probe.file_facts(str(path), 'sha1') == expected
    assert probe.file_facts(str(tmp_path / 'none'), 'sha256') == {'exists': False, 'digest': None, 'mode': None}
    assert probe.file_facts(str(tmp_path), 'sha256')['digest'] is None


def test_download_facts_lists_missing_parents_outermost_first(tmp_path):
    (tmp_path / 'afile').write_text('x')
    facts = probe.download_facts(str(tmp_path / 'srv' / 'cloudhv' / 'cache' / 'download'))
    assert facts == {'missing': [str(tmp_path / 'srv'), str(tmp_path / 'srv' / 'cloudhv'),
                                 str(tmp_path / 'srv' / 'cloudhv' / 'cache')],
                     'existing': str(tmp_path), 'error': None}
    assert probe.download_facts(str(tmp_path / 'download')) == {'missing': [], 'existing': str(tmp_path),
                                                                'error': None}
    below_file = probe.download_facts(str(tmp_path / 'afile' / 'x' / 'download'))
    assert below_file['error'] == ('cloudhv_download_dir is %s, but %s is not a directory'
                                   % (tmp_path / 'afile' / 'x' / 'download', tmp_path / 'afile'))
    assert 'must be an absolute path' in probe.download_facts('relative/download')['error']
    assert probe.download_facts('') == {'missing': [], 'existing': None, 'error': None}
