"""roles/install: digests checked before anything is installed, the mirror override, the choice
of builds by architecture, controller downloads, check mode and a second run that changes nothing.

The mirror is tests/simulator/mirror.py's stand-in mirror, reached with file:// URLs (the role
downloads through get_url either way; Molecule and the demo serve it over HTTP). Its files are
not the real builds, so their digests are given in cloudhv_checksums."""
import json
import os
import shutil
import subprocess

from tests.roles.conftest import changed, failure, run_role, sha256

CH = 'cloud-hypervisor/v53.0/cloud-hypervisor-static'
FILES = {'bin/cloud-hypervisor': (CH, '0755'),
         'bin/ch-remote': ('cloud-hypervisor/v53.0/ch-remote-static', '0755'),
         'fw/hypervisor-fw': ('rust-hypervisor-firmware/0.5.0/hypervisor-fw', '0644'),
         'fw/CLOUDHV.fd': ('edk2/ch-1e1b96f126/CLOUDHV.fd', '0644')}


def install_vars(tmp_path, mirror, **extra):
    root, digests = mirror
    out = {'cloudhv_mirror_url': 'file://' + root, 'cloudhv_checksums': digests,
           'cloudhv_bin_dir': str(tmp_path / 'bin'), 'cloudhv_firmware_dir': str(tmp_path / 'fw'),
           'cloudhv_download_dir': str(tmp_path / 'staging')}
    out.update(extra)
    return out


def snapshot(tmp_path):
    """Every file under bin/ and fw/ with its digest and mode."""
    out = {}
    for sub in ('bin', 'fw'):
        top = tmp_path / sub
        if top.exists():
            for name in os.listdir(str(top)):
                path = str(top / name)
                out['%s/%s' % (sub, name)] = (sha256(path), '%04o' % (os.stat(path).st_mode & 0o7777))
    return out


def staged(tmp_path):
    """What staging left beside the install dirs (cloudhv_download_dir is tmp_path/staging)."""
    return sorted(name for name in os.listdir(str(tmp_path)) if name.startswith('staging'))


def task(res, suffix):
    found = [r for r in res.results if r['task'].endswith(suffix)]
    assert found, (suffix, [r['task'] for r in res.results])
    return found[-1]


def test_install_check_mode_then_install_then_nothing_to_do(tmp_path, mirror):
    _root, digests = mirror
    variables = install_vars(tmp_path, mirror, cloudhv_setcap=True)

    res = run_role(tmp_path, 'install', variables, check=True)
    assert res.rc == 0, res.stdout[-3000:]
    assert changed(res), 'check mode must predict the installation'
    assert not (tmp_path / 'bin').exists() and not (tmp_path / 'fw').exists()
    report = task(res, 'Report what a real run would install')
    assert len(report['result']['results']) == 4

    res = run_role(tmp_path, 'install', variables)
    assert res.rc == 0, res.stdout[-3000:]
    assert snapshot(tmp_path) == dict((path, (digests[key], mode)) for path, (key, mode) in FILES.items())
    getcap = subprocess.run(['getcap', str(tmp_path / 'bin' / 'cloud-hypervisor')], capture_output=True,
                            text=True, check=True).stdout
    assert 'cap_net_admin' in getcap
    assert staged(tmp_path) == [], 'the staging directory is removed'
    out = subprocess.run([str(tmp_path / 'bin' / 'cloud-hypervisor'), '--version'], capture_output=True,
                         text=True, check=True).stdout
    assert out.splitlines()[0] == 'cloud-hypervisor v53.0.0'   # as the real CH v53.0 prints it
    deps = task(res, 'Say which dependencies were installed')['result']['msg']
    assert 'nothing to install' in deps and 'httpx' in deps

    for check in (False, True):
        res = run_role(tmp_path, 'install', variables, check=check)
        assert res.rc == 0, res.stdout[-3000:]
        assert changed(res) == [], (check, changed(res))

    # capabilities lost (as when someone replaces the file) are predicted in check mode, then granted
    subprocess.run(['setcap', '-r', str(tmp_path / 'bin' / 'cloud-hypervisor')], check=True)
    res = run_role(tmp_path, 'install', variables, check=True)
    assert [t.split(' : ')[-1] for t in changed(res)] == ['Report that a real run would grant cap_net_admin+ep']

    # a changed mode is put right; a changed file is replaced (digests are compared, not presence)
    os.chmod(str(tmp_path / 'fw' / 'CLOUDHV.fd'), 0o600)
    with open(str(tmp_path / 'bin' / 'ch-remote'), 'w') as handle:
        handle.write('#!/bin/sh\necho tampered\n')
    res = run_role(tmp_path, 'install', variables)
    assert res.rc == 0, res.stdout[-3000:]
    assert len(changed(res)) == 3, changed(res)  # the mode, the file, and the capability
    assert snapshot(tmp_path) == dict((path, (digests[key], mode)) for path, (key, mode) in FILES.items())
    assert 'cap_net_admin' in subprocess.run(['getcap', str(tmp_path / 'bin' / 'cloud-hypervisor')],
                                             capture_output=True, text=True, check=True).stdout


def test_another_runs_staged_files_are_left_alone(tmp_path, mirror):
    """Two plays installing on one host at once: each stages in a directory of its own and removes
    only that (one shared staging directory let a play delete the other's verified downloads)."""
    variables = install_vars(tmp_path, mirror, cloudhv_install_dependencies=False)
    for other in ('staging', 'staging.other'):      # a concurrent run's place, either layout
        (tmp_path / other).mkdir()
        (tmp_path / other / 'cloud-hypervisor-static').write_text('verified by the other run')
    res = run_role(tmp_path, 'install', variables)
    assert res.rc == 0, res.stdout[-3000:]
    assert staged(tmp_path) == ['staging', 'staging.other']
    for other in ('staging', 'staging.other'):
        assert (tmp_path / other / 'cloud-hypervisor-static').read_text() == 'verified by the other run'
    staging = task(res, "Make this run's staging directory on the target")['result']
    assert staging['path'].startswith(str(tmp_path / 'staging.'))
    assert not os.path.exists(staging['path'])


def _upgrade_mirror(tmp_path, mirror, tag, content):
    """A mirror that also serves `tag`: CH as `content`, ch-remote as the stand-in's."""
    root, _digests = mirror
    new = tmp_path / 'mirror'
    shutil.copytree(root, str(new))
    release = new / 'cloud-hypervisor' / 'releases' / 'download' / tag
    release.mkdir()
    (release / 'cloud-hypervisor-static').write_bytes(content)
    shutil.copy(str(new / 'cloud-hypervisor' / 'releases' / 'download' / 'v53.0' / 'ch-remote-static'),
                str(release / 'ch-remote-static'))
    return str(new)


def test_digest_mismatch_installs_nothing_and_keeps_the_old_binary(tmp_path, mirror):
    root, digests = mirror
    variables = install_vars(tmp_path, mirror)
    res = run_role(tmp_path, 'install', variables)
    assert res.rc == 0, res.stdout[-3000:]
    before = snapshot(tmp_path)

    # v53.1 on the mirror is not the build its pin names; ch-remote v53.1 matches its pin
    new = _upgrade_mirror(tmp_path, mirror, 'v53.1', b'#!/bin/sh\necho not the pinned build\n')
    checksums = dict(digests)
    checksums['cloud-hypervisor/v53.1/cloud-hypervisor-static'] = 'sha256:' + 'ab' * 32
    checksums['cloud-hypervisor/v53.1/ch-remote-static'] = digests['cloud-hypervisor/v53.0/ch-remote-static']
    variables.update(cloudhv_mirror_url='file://' + new, cloudhv_version='v53.1', cloudhv_checksums=checksums)
    (tmp_path / 'bin' / 'ch-remote').write_text('#!/bin/sh\necho old ch-remote\n')
    before['bin/ch-remote'] = snapshot(tmp_path)['bin/ch-remote']
    res = run_role(tmp_path, 'install', variables)
    assert res.rc != 0
    msg = failure(res)
    assert ('/v53.1/cloud-hypervisor-static: its digest is %s, not the pinned sha256:%s'
            % (sha256(new + '/cloud-hypervisor/releases/download/v53.1/cloud-hypervisor-static'), 'ab' * 32)) in msg, msg
    assert 'Nothing was installed: every installed file is as it was' in msg, msg
    assert snapshot(tmp_path) == before, 'neither the mismatching CH nor the verified ch-remote was installed'
    assert staged(tmp_path) == []


def test_unknown_version_without_digest_refuses_unless_unverified_is_allowed(tmp_path, mirror):
    root, digests = mirror
    new = _upgrade_mirror(tmp_path, mirror, 'v99.0', b'#!/bin/sh\necho cloud-hypervisor v99.0\n')
    variables = install_vars(tmp_path, mirror, cloudhv_mirror_url='file://' + new, cloudhv_version='99.0',
                             cloudhv_checksums={})
    res = run_role(tmp_path, 'install', variables)
    assert res.rc != 0
    msg = failure(res)
    assert 'no pinned digest for cloud-hypervisor/v99.0/cloud-hypervisor-static, cloud-hypervisor/v99.0/ch-remote-static' in msg
    assert 'cloudhv_checksums' in msg and 'cloudhv_allow_unverified' in msg
    assert not (tmp_path / 'bin').exists(), 'nothing was downloaded or installed'

    # the firmware keeps its built-in pins, which the stand-ins do not match: leave it out here
    variables.update(cloudhv_allow_unverified=True, cloudhv_install_firmware=False, cloudhv_install_edk2=False)
    res = run_role(tmp_path, 'install', variables)
    assert res.rc == 0, res.stdout[-3000:]
    warning = task(res, 'Warn about artifacts installed without verification')['result']['msg']
    assert warning.startswith('WARNING') and 'WITHOUT any digest check' in warning
    assert (tmp_path / 'bin' / 'cloud-hypervisor').read_bytes() == b'#!/bin/sh\necho cloud-hypervisor v99.0\n'
    res = run_role(tmp_path, 'install', variables)
    assert res.rc == 0 and changed(res) == [], changed(res)


def test_builtin_pins_are_the_facts_pins(tmp_path, mirror):
    """Without cloudhv_checksums the default versions are checked against the built-in pins, which
    the stand-ins do not match: nothing is installed."""
    _root, digests = mirror
    variables = install_vars(tmp_path, mirror, cloudhv_checksums={})
    res = run_role(tmp_path, 'install', variables)
    assert res.rc != 0
    msg = failure(res)
    assert ('/cloud-hypervisor/releases/download/v53.0/cloud-hypervisor-static: its digest is %s, not the pinned '
            'sha256:448af3d4e59b22c2987f7df94c213ad40fb53a10d437e42b5ee6c4fce7c29ecc' % digests[CH]) in msg, msg
    assert 'Nothing was installed' in msg
    assert snapshot(tmp_path) == {}


def test_mirror_override_and_architecture_selection(tmp_path, mirror):
    root, digests = mirror

    def plan(res):
        return task(res, 'Plan the downloads')['result']['ansible_facts']['cloudhv_install_plan']

    # the default base is GitHub's; check mode only plans (and would ask GitHub, which is not
    # reachable here): the plan is read from the planning task
    res = run_role(tmp_path, 'install', install_vars(tmp_path, mirror, cloudhv_mirror_url='', cloudhv_arch='amd64',
                                                     cloudhv_checksums={}, cloudhv_install_dependencies=False),
                   check=True)
    urls = [p['url'] for p in plan(res)]
    assert urls == ['https://github.com/cloud-hypervisor/cloud-hypervisor/releases/download/v53.0/cloud-hypervisor-static',
                    'https://github.com/cloud-hypervisor/cloud-hypervisor/releases/download/v53.0/ch-remote-static',
                    'https://github.com/cloud-hypervisor/rust-hypervisor-firmware/releases/download/0.5.0/hypervisor-fw',
                    'https://github.com/cloud-hypervisor/edk2/releases/download/ch-1e1b96f126/CLOUDHV.fd']
    assert [p['digest'].split(':')[0] for p in plan(res)] == ['sha256', 'sha256', 'sha256', 'sha1']

    # aarch64: the -aarch64 builds and CLOUDHV_EFI.fd, for which no pins are built in
    res = run_role(tmp_path, 'install', install_vars(tmp_path, mirror, cloudhv_arch='arm64', cloudhv_checksums={},
                                                     cloudhv_install_dependencies=False))
    assert res.rc != 0
    assert [p['url'] for p in plan(res)] == [
        'file://%s/cloud-hypervisor/releases/download/v53.0/cloud-hypervisor-static-aarch64' % root,
        'file://%s/cloud-hypervisor/releases/download/v53.0/ch-remote-static-aarch64' % root,
        'file://%s/rust-hypervisor-firmware/releases/download/0.5.0/hypervisor-fw-aarch64' % root,
        'file://%s/edk2/releases/download/ch-1e1b96f126/CLOUDHV_EFI.fd' % root]
    assert 'no pinned digest for cloud-hypervisor/v53.0/cloud-hypervisor-static-aarch64' in failure(res)

    # with the digests, from the mirror (trailing slash and all)
    res = run_role(tmp_path, 'install', install_vars(tmp_path, mirror, cloudhv_arch='aarch64',
                                                     cloudhv_mirror_url='file://%s/' % root,
                                                     cloudhv_install_dependencies=False))
    assert res.rc == 0, res.stdout[-3000:]
    assert snapshot(tmp_path)['fw/hypervisor-fw'][0] == digests['rust-hypervisor-firmware/0.5.0/hypervisor-fw-aarch64']
    assert snapshot(tmp_path)['fw/CLOUDHV_EFI.fd'][0] == digests['edk2/ch-1e1b96f126/CLOUDHV_EFI.fd']
    assert 'fw/CLOUDHV.fd' not in snapshot(tmp_path)

    res = run_role(tmp_path, 'install', install_vars(tmp_path, mirror, cloudhv_arch='riscv64'), check=True)
    assert res.rc != 0
    assert 'publishes static builds for x86_64 and aarch64 only' in failure(res)


def test_download_on_controller(tmp_path, mirror):
    _root, digests = mirror
    cache = tmp_path / 'cache'
    variables = install_vars(tmp_path, mirror, cloudhv_download_on_controller=True,
                             cloudhv_controller_cache_dir=str(cache), cloudhv_install_dependencies=False)
    res = run_role(tmp_path, 'install', variables)
    assert res.rc == 0, res.stdout[-3000:]
    assert snapshot(tmp_path) == dict((path, (digests[key], mode)) for path, (key, mode) in FILES.items())
    assert sha256(str(cache / CH)) == digests[CH], 'verified into the controller cache, copied from there'
    assert staged(tmp_path) == [], 'nothing staged on the target'
    res = run_role(tmp_path, 'install', variables)
    assert res.rc == 0 and changed(res) == [], changed(res)


def test_dependency_probe_reports_what_it_would_install(tmp_path, mirror):
    """A requirement the interpreter does not meet is planned for pip (the interpreter is a
    virtualenv) and reported in check mode; nothing is installed in check mode."""
    variables = install_vars(tmp_path, mirror, cloudhv_python_requirements={'httpx': '999.0'})
    res = run_role(tmp_path, 'install', variables, check=True)
    assert res.rc == 0, res.stdout[-3000:]
    probe = json.loads(task(res, 'Probe the target (dependencies, and the digests and modes of the installed files)')
                       ['result']['stdout'])
    assert probe['venv'] and probe['pip_packages'] == ['httpx>=999.0'], probe
    pip = task(res, 'Install Python libraries with pip (httpx>=999.0)')
    assert pip['result'].get('changed'), pip
    assert 'would install' in task(res, 'Say which dependencies were installed')['result']['msg']

    res = run_role(tmp_path, 'install', dict(variables, cloudhv_python_deps='none'), check=True)
    assert res.rc != 0
    assert 'needs httpx>=999.0' in failure(res) and 'cloudhv_python_deps is none' in failure(res)


def test_download_dir_parents_are_created_and_removed_on_failure(tmp_path, mirror):
    """cloudhv_download_dir on a fresh host (/srv/cloudhv/cache/download): its missing parents are
    created (mode 0755) and stay; check mode predicts them and creates nothing; a run that fails
    installs nothing and leaves none of them behind."""
    _root, digests = mirror
    fresh = tmp_path / 'srv'
    variables = install_vars(tmp_path, mirror, cloudhv_install_dependencies=False,
                             cloudhv_download_dir=str(fresh / 'cloudhv' / 'cache' / 'download'))

    res = run_role(tmp_path, 'install', variables, check=True)
    assert res.rc == 0, res.stdout[-3000:]
    assert any(t.endswith('Make the directories above cloudhv_download_dir') for t in changed(res)), changed(res)
    assert not fresh.exists() and not (tmp_path / 'bin').exists()

    wrong = dict(digests)
    wrong[CH] = 'sha256:' + 'ab' * 32
    res = run_role(tmp_path, 'install', dict(variables, cloudhv_checksums=wrong))
    assert res.rc != 0
    assert 'Nothing was installed' in failure(res)
    assert not fresh.exists(), 'the directories this run created are removed again'
    assert snapshot(tmp_path) == {}

    res = run_role(tmp_path, 'install', variables)
    assert res.rc == 0, res.stdout[-3000:]
    assert snapshot(tmp_path) == dict((path, (digests[key], mode)) for path, (key, mode) in FILES.items())
    for path in (fresh, fresh / 'cloudhv', fresh / 'cloudhv' / 'cache'):
        assert '%04o' % (os.stat(str(path)).st_mode & 0o7777) == '0755', path
    assert os.listdir(str(fresh / 'cloudhv' / 'cache')) == [], 'the staging directory is removed'

    # a failure keeps directories that were there before the run, and a concurrent run's files
    (fresh / 'cloudhv' / 'cache' / 'download.other').mkdir()
    os.unlink(str(tmp_path / 'bin' / 'cloud-hypervisor'))
    res = run_role(tmp_path, 'install', dict(variables, cloudhv_checksums=wrong))
    assert res.rc != 0
    assert os.listdir(str(fresh / 'cloudhv' / 'cache')) == ['download.other']


def test_download_dir_that_cannot_work_is_refused_naming_the_variable(tmp_path, mirror):
    (tmp_path / 'afile').write_text('not a directory')
    for where, why in ((str(tmp_path / 'afile' / 'cache' / 'download'),
                        '%s is not a directory' % (tmp_path / 'afile')),
                       ('relative/download', 'must be an absolute path')):
        variables = install_vars(tmp_path, mirror, cloudhv_install_dependencies=False, cloudhv_download_dir=where)
        for check in (True, False):
            res = run_role(tmp_path, 'install', variables, check=check)
            assert res.rc != 0
            msg = failure(res)
            assert 'cloudhv_download_dir' in msg and why in msg, msg
            assert snapshot(tmp_path) == {} and not (tmp_path / 'relative').exists()
