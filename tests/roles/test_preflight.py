"""roles/preflight: passes on this machine with the defaults (its KVM comes from kvm_pvm, whose
nested state is unknown) and says so in its facts; lists every problem with a remedy.

A host without /dev/kvm and /dev/net/tun is made by running the play in a private mount namespace
whose /dev is a fresh tmpfs holding only the few nodes Ansible needs."""
import json
import os
import sys

import yaml

from tests.roles.conftest import changed, failure, run_role
from tests.support.ansible import BIN, _run

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                'build', 'collections'))
from ansible_collections.cloudhv.ch.plugins.module_utils import hostinfo  # noqa: E402

NO_KVM_DEV = r'''
mount -t tmpfs -o mode=0755 cloudhv-test-dev /dev
for node in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
  IFS=: read -r name major minor <<EOF
$node
EOF
  mknod -m 0666 "/dev/$name" c "$major" "$minor"
done
mkdir -m 1777 /dev/shm
ln -s /proc/self/fd /dev/fd
exec "$@"
'''


def facts(res):
    found = [r for r in res.results if r['task'].endswith('Publish the KVM module and nested virtualization as facts')]
    assert found, res.stdout[-3000:]
    return found[-1]['result']['ansible_facts']


def test_preflight_passes_here_and_reports_the_kvm_module(tmp_path, mirror):
    root, _digests = mirror
    variables = {'cloudhv_binary': root + '/cloud-hypervisor/releases/download/v53.0/cloud-hypervisor-static',
                 'cloudhv_state_dir': str(tmp_path / 'state'), 'cloudhv_run_dir': str(tmp_path / 'run'),
                 'cloudhv_preflight_check_resources': True,
                 'cloudhv_vms': [{'name': 'small', 'memory': 64}, {'name': 'off', 'state': 'stopped', 'memory': '64T'}]}
    for check in (False, True):
        res = run_role(tmp_path, 'preflight', variables, check=check)
        assert res.rc == 0, res.stdout[-3000:]
        assert changed(res) == []
    modules = hostinfo.kvm_modules()
    nested, reason = hostinfo.nested_facts(modules)
    got = facts(res)
    assert got['cloudhv_kvm_modules'] == modules
    assert got['cloudhv_kvm_module'] == ([m for m in modules if m in ('kvm_intel', 'kvm_amd')] or modules or [None])[0]
    assert got['cloudhv_nested'] == nested and got['cloudhv_nested_reason'] == reason
    assert got['cloudhv_host']['binary']['version'] == '53.0.0'   # the simulator prints what CH v53.0 does

    # the version the install role would have installed (here given directly) must match
    res = run_role(tmp_path, 'preflight', dict(variables, cloudhv_preflight_expected_version='v54.0'))
    assert res.rc != 0
    assert 'cloud-hypervisor-static is version 53.0.0, expected 54.0. Remedy: run the cloudhv.ch.install role' in failure(res)


def test_preflight_takes_the_real_binarys_version_output(tmp_path):
    """The real CH v53.0 prints 'cloud-hypervisor v53.0.0' (and a second line), not 'v53.0':
    that is the pinned version, not another one (found with the real binary)."""
    binary = tmp_path / 'cloud-hypervisor'
    binary.write_text('#!/bin/sh\nprintf "cloud-hypervisor v53.0.0\\nMigration Protocol Versions: 0\\n"\n')
    binary.chmod(0o755)
    variables = {'cloudhv_binary': str(binary), 'cloudhv_state_dir': str(tmp_path / 'state'),
                 'cloudhv_run_dir': str(tmp_path / 'run')}
    res = run_role(tmp_path, 'preflight', dict(variables, cloudhv_preflight_expected_version='v53.0'))
    assert res.rc == 0, failure(res)
    assert facts(res)['cloudhv_host']['binary']['version'] == '53.0.0'
    res = run_role(tmp_path, 'preflight', dict(variables, cloudhv_preflight_expected_version='v53.1'))
    assert res.rc != 0
    assert 'is version 53.0.0, expected 53.1' in failure(res)


def test_preflight_lists_every_problem_with_a_remedy(tmp_path):
    variables = {'cloudhv_binary': str(tmp_path / 'missing' / 'cloud-hypervisor'),
                 'cloudhv_state_dir': str(tmp_path / 'state'), 'cloudhv_run_dir': str(tmp_path / 'run'),
                 'cloudhv_require_nested': True,
                 'cloudhv_preflight_check_resources': True,
                 'cloudhv_vms': [{'name': 'huge', 'memory': '64T'},
                                 {'name': 'pinned', 'memory': '1T', 'hugepages': True}]}
    play = [{'name': 'test', 'hosts': 'localhost', 'connection': 'local', 'gather_facts': False,
             'tasks': [{'name': 'role', 'ansible.builtin.include_role': {'name': 'cloudhv.ch.preflight'}}]}]
    playbook = tmp_path / 'preflight.yml'
    playbook.write_text(yaml.safe_dump(play))
    cmd = ['unshare', '--mount', '--propagation', 'private', 'bash', '-ec', NO_KVM_DEV, 'bash',
           os.path.join(BIN, 'ansible-playbook'), str(playbook), '-i', 'localhost,', '-e', json.dumps(variables)]
    res = _run(cmd, tmp_path)
    assert res.rc != 0, res.stdout[-3000:]
    msg = failure(res)
    problems = msg.split(' -- ')
    assert len(problems) == 6, problems
    expected = [
        '/dev/kvm does not exist: KVM is not available on this host. Remedy: enable hardware virtualization',
        '/dev/net/tun does not exist: VMs cannot get tap interfaces. Remedy: modprobe tun',
        'missing/cloud-hypervisor does not exist. Remedy: run the cloudhv.ch.install role',
        'nested virtualization is required (cloudhv_require_nested) but ',
        'the VMs to start (huge, pinned) need 67108864 MiB of RAM plus 1024 MiB kept for the host',
        'the hugepage-backed VMs need 1048576 MiB in hugepages',
    ]
    for problem, start in zip(problems, expected):
        assert start in problem, (start, problem)
        assert 'Remedy:' in problem, problem
    found = facts(res)
    assert found['cloudhv_host']['kvm']['present'] is False and found['cloudhv_host']['tun']['present'] is False
