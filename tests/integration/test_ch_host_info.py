# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ch_host_info as users run it: ad hoc, in check mode, in playbooks with module_defaults and
extra vars, and through ansible-doc. Expectations about KVM come from this machine's
/sys/module, so the same tests pass on kvm_intel, kvm_amd, kvm_pvm and KVM-less hosts."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import subprocess

from tests.support.ansible import BIN, ansible_env, run_adhoc, run_playbook

MODULE = 'cloudhv.ch.ch_host_info'
OPTIONS = {'binary', 'state_dir', 'run_dir', 'api_timeout', 'firmware_dir'}


def _expected_kvm():
    """(kvm_modules, kvm_module, nested) as this machine's /sys/module shows them."""
    loaded = sorted(n for n in os.listdir('/sys/module') if n.startswith('kvm_'))
    vendor = [m for m in loaded if m in ('kvm_intel', 'kvm_amd')]
    if vendor:
        with open('/sys/module/%s/parameters/nested' % vendor[0]) as handle:
            value = handle.read().strip()
        nested = True if value in ('Y', 'y', '1') else False if value in ('N', 'n', '0') else None
        return loaded, vendor[0], nested
    return loaded, (loaded[0] if loaded else None), None


def _fake_binary(tmp_path, version='v53.0'):
    path = tmp_path / 'cloud-hypervisor'
    path.write_text('#!/bin/sh\necho "cloud-hypervisor %s"\n' % version)
    os.chmod(str(path), 0o755)
    return str(path)


def _fake_state_dir(tmp_path, names=('web1',)):
    state = tmp_path / 'state'
    for name in names:
        (state / 'vms' / name).mkdir(parents=True)
        (state / 'vms' / name / 'vm.json').write_text(json.dumps({'name': name, 'record_version': 1}))
    return str(state)


def _assert_ok(res):
    assert res.rc == 0, res
    assert res.results[-1]['status'] == 'ok', res
    assert res.result['changed'] is False
    return res.result['host']


def test_adhoc_reports_this_hosts_kvm(tmp_path):
    host = _assert_ok(run_adhoc(tmp_path, MODULE))
    loaded, module, nested = _expected_kvm()
    assert host['kvm_modules'] == loaded
    assert host['kvm_module'] == module
    assert host['nested'] is nested
    assert host['nested_reason']
    if module in ('kvm_intel', 'kvm_amd'):
        assert '/sys/module/%s/parameters/nested' % module in host['nested_reason']
    elif module:
        # e.g. kvm_pvm (this build machine): no nested parameter, so unknown, and said why
        assert module in host['nested_reason']
        assert 'no nested-virtualization parameter' in host['nested_reason']
    else:
        assert 'no KVM vendor module' in host['nested_reason']
    assert host['kvm']['present'] == os.path.exists('/dev/kvm')
    assert host['cpus'] == os.cpu_count()
    assert host['memory']['total_bytes'] > 0
    # defaults of the common options
    assert host['state_dir'] == '/var/lib/cloudhv'
    assert host['run_dir'] == '/run/cloudhv'
    assert host['binary']['path'] == '/usr/local/bin/cloud-hypervisor'


def test_adhoc_with_arguments(tmp_path):
    binary = _fake_binary(tmp_path)
    firmware = tmp_path / 'fw'
    firmware.mkdir()
    (firmware / 'hypervisor-fw').write_bytes(b'fw')
    state = _fake_state_dir(tmp_path, ('web1', 'db1'))
    host = _assert_ok(run_adhoc(tmp_path, MODULE, 'binary=%s firmware_dir=%s state_dir=%s'
                                % (binary, firmware, state)))
    assert host['binary'] == {'path': binary, 'present': True, 'executable': True,
                              'version': '53.0', 'version_output': 'cloud-hypervisor v53.0',
                              'error': None}
    assert host['firmware']['present'] == ['hypervisor-fw']
    assert host['vms'] == ['db1', 'web1']
    assert host['state_dir'] == state


def test_check_mode(tmp_path):
    state = _fake_state_dir(tmp_path)
    run_dir = str(tmp_path / 'run')
    res = run_adhoc(tmp_path, MODULE, 'state_dir=%s run_dir=%s' % (state, run_dir), check=True)
    host = _assert_ok(res)
    assert host['vms'] == ['web1']
    assert not os.path.exists(run_dir)          # an info module creates nothing
    # the same facts as a normal run
    normal = _assert_ok(run_adhoc(tmp_path, MODULE, 'state_dir=%s run_dir=%s' % (state, run_dir)))
    for key in ('kvm', 'kvm_module', 'kvm_modules', 'nested', 'nested_reason', 'vms', 'binary'):
        assert host[key] == normal[key]


def test_check_mode_in_a_playbook(tmp_path):
    res = run_playbook(tmp_path, tasks=[{'name': 'facts', MODULE: {}, 'register': 'facts'}],
                       check=True, diff=True)
    assert res.rc == 0, res
    assert res.task('facts')['changed'] is False


def test_module_defaults_group_sets_state_dir(tmp_path):
    state = _fake_state_dir(tmp_path)
    binary = _fake_binary(tmp_path, 'v52.1')
    defaults = {'group/cloudhv.ch.ch': {'state_dir': state, 'binary': binary}}
    res = run_playbook(
        tmp_path,
        tasks=[
            {'name': 'from module_defaults', MODULE: {}},
            {'name': 'task argument wins', MODULE: {'state_dir': str(tmp_path / 'other')}},
        ],
        play_extra={'module_defaults': defaults})
    assert res.rc == 0, res
    host = res.task('from module_defaults')['host']
    assert host['state_dir'] == state
    assert host['vms'] == ['web1']
    assert host['binary']['version'] == '52.1'
    other = res.task('task argument wins')['host']
    assert other['state_dir'] == str(tmp_path / 'other')
    assert other['vms'] == []
    assert other['binary']['version'] == '52.1'


def test_playbook_with_extra_vars(tmp_path):
    playbook = tmp_path / 'facts.yml'
    playbook.write_text(
        '- name: Host facts\n'
        '  hosts: localhost\n'
        '  connection: local\n'
        '  gather_facts: false\n'
        '  tasks:\n'
        '    - name: facts\n'
        '      cloudhv.ch.ch_host_info:\n'
        '        binary: "{{ ch_binary }}"\n'
        '        state_dir: "{{ ch_state_dir }}"\n'
        '      register: facts\n'
        '    - name: check\n'
        '      ansible.builtin.assert:\n'
        '        that:\n'
        '          - facts.host.binary.version == "53.0"\n'
        '          - facts.host.vms == ["web1"]\n'
        '          - facts is not changed\n')
    res = run_playbook(tmp_path, playbook=str(playbook),
                       extra_vars={'ch_binary': _fake_binary(tmp_path),
                                   'ch_state_dir': _fake_state_dir(tmp_path)})
    assert res.rc == 0, res
    assert res.task('facts')['host']['binary']['version'] == '53.0'
    assert res.task('check')['changed'] is False


def test_unusual_binary_is_reported_not_fatal(tmp_path):
    broken = tmp_path / 'broken-ch'
    broken.write_text('#!/bin/sh\necho "segfault" >&2\nexit 139\n')
    os.chmod(str(broken), 0o755)
    host = _assert_ok(run_adhoc(tmp_path, MODULE, 'binary=%s' % broken))
    assert host['binary']['version'] is None
    assert 'exited 139' in host['binary']['error']


def test_unknown_option_fails_clearly(tmp_path):
    res = run_adhoc(tmp_path, MODULE, 'bogus=1')
    assert res.rc != 0
    assert res.results[-1]['status'] == 'failed'
    assert 'bogus' in res.result['msg']


def _ansible_doc(tmp_path, *args):
    proc = subprocess.run([os.path.join(BIN, 'ansible-doc')] + list(args) + [MODULE],
                          env=ansible_env(tmp_path), cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert 'WARNING' not in proc.stderr, proc.stderr
    return proc.stdout


def test_ansible_doc_renders(tmp_path):
    text = _ansible_doc(tmp_path)
    assert text.startswith('> MODULE %s (' % MODULE)
    assert 'Reports what a host offers for Cloud Hypervisor virtual machines' in text
    for option in sorted(OPTIONS):
        # an option entry: "- name  description" (or "= name" when required)
        assert re.search(r'^[-=] %s  \S' % option, text, re.M), option
    assert 'action_group' in text and 'group/cloudhv.ch.ch' in text
    for section in ('NOTES:', 'EXAMPLES:', 'RETURN VALUES:'):
        assert section in text
    assert 'cloudhv.ch.ch_host_info:' in text   # the examples are there


def test_ansible_doc_json(tmp_path):
    doc = json.loads(_ansible_doc(tmp_path, '--json'))[MODULE]
    assert set(doc['doc']['options']) == OPTIONS
    assert doc['doc']['options']['state_dir']['default'] == '/var/lib/cloudhv'
    assert doc['doc']['attributes']['check_mode']['support'] == 'full'
    assert set(doc['return']['host']['contains']) >= {'kvm_module', 'nested', 'nested_reason', 'vms'}
