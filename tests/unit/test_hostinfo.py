# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for module_utils/hostinfo.py: fake /sys/module trees, fake CH binaries, fake
/proc files and firmware directories in tmp dirs. No probe may raise on an unusual host."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import stat

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils import hostinfo


def _sys_module(tmp_path, modules):
    """A fake /sys/module: ``modules`` maps module name -> nested value (str), None for a
    module without a ``nested`` parameter, or a callable(path) building something odd."""
    root = tmp_path / 'sys_module'
    root.mkdir()
    (root / 'kvm' / 'parameters').mkdir(parents=True)   # the core module is always there
    (root / 'vhost_net').mkdir()
    for name, nested in modules.items():
        params = root / name / 'parameters'
        params.mkdir(parents=True)
        (params / 'other_param').write_text('0\n')
        if callable(nested):
            nested(params / 'nested')
        elif nested is not None:
            (params / 'nested').write_text(nested + '\n')
    return str(root)


def _script(tmp_path, name, body, mode=0o755):
    path = tmp_path / name
    path.write_text('#!/bin/sh\n' + body + '\n')
    os.chmod(str(path), mode)
    return str(path)


# -- KVM modules and nested virtualization -------------------------------------------------------

@pytest.mark.parametrize('module,value,expected', [
    ('kvm_intel', 'Y', True),
    ('kvm_intel', 'N', False),
    ('kvm_amd', '1', True),
    ('kvm_amd', '0', False),
])
def test_nested_from_vendor_module(tmp_path, module, value, expected):
    sys_module = _sys_module(tmp_path, {module: value})
    modules = hostinfo.kvm_modules(sys_module)
    assert modules == [module]
    nested, reason = hostinfo.nested_facts(modules, sys_module)
    assert nested is expected
    path = os.path.join(sys_module, module, 'parameters', 'nested')
    assert reason == '%s reports nested=%s' % (path, value)


def test_kvm_pvm_has_no_nested_parameter(tmp_path):
    sys_module = _sys_module(tmp_path, {'kvm_pvm': None})
    modules = hostinfo.kvm_modules(sys_module)
    assert modules == ['kvm_pvm']
    nested, reason = hostinfo.nested_facts(modules, sys_module)
    assert nested is None
    assert 'kvm_pvm' in reason
    assert 'no nested-virtualization parameter' in reason


def test_no_kvm_module_at_all(tmp_path):
    sys_module = _sys_module(tmp_path, {})
    modules = hostinfo.kvm_modules(sys_module)
    assert modules == []          # the core 'kvm' module is not a vendor module
    nested, reason = hostinfo.nested_facts(modules, sys_module)
    assert nested is None
    assert 'no KVM vendor module is loaded' in reason


def test_missing_sys_module_dir(tmp_path):
    missing = str(tmp_path / 'no-such-dir')
    assert hostinfo.kvm_modules(missing) == []
    nested, reason = hostinfo.nested_facts([], missing)
    assert nested is None and reason


@pytest.mark.parametrize('make_unreadable', [
    pytest.param(lambda p: p.mkdir(), id='nested-is-a-directory'),
    pytest.param(lambda p: p.symlink_to(p.parent / 'gone'), id='nested-is-a-dangling-symlink'),
])
def test_unreadable_nested_parameter(tmp_path, make_unreadable):
    # File modes do not stop root, so "cannot be read" is produced with paths open() refuses.
    sys_module = _sys_module(tmp_path, {'kvm_intel': make_unreadable})
    nested, reason = hostinfo.nested_facts(['kvm_intel'], sys_module)
    assert nested is None
    assert reason.startswith('kvm_intel is loaded but ')
    assert reason.endswith('cannot be read')


@pytest.mark.skipif(os.geteuid() == 0, reason='root reads files whatever their mode')
def test_nested_parameter_without_read_permission(tmp_path):
    sys_module = _sys_module(tmp_path, {'kvm_amd': '1'})
    os.chmod(os.path.join(sys_module, 'kvm_amd', 'parameters', 'nested'), 0)
    nested, reason = hostinfo.nested_facts(['kvm_amd'], sys_module)
    assert nested is None
    assert 'cannot be read' in reason


def test_unexpected_nested_value(tmp_path):
    sys_module = _sys_module(tmp_path, {'kvm_intel': 'maybe'})
    nested, reason = hostinfo.nested_facts(['kvm_intel'], sys_module)
    assert nested is None
    assert "unexpected value 'maybe'" in reason


def test_vendor_module_wins_over_other_kvm_modules(tmp_path):
    sys_module = _sys_module(tmp_path, {'kvm_pvm': None, 'kvm_intel': 'Y'})
    facts = hostinfo.gather(binary=str(tmp_path / 'none'), firmware_dir=str(tmp_path),
                            state_dir=str(tmp_path / 'state'), run_dir=str(tmp_path / 'run'),
                            sys_module=sys_module)
    assert facts['kvm_modules'] == ['kvm_intel', 'kvm_pvm']
    assert facts['kvm_module'] == 'kvm_intel'
    assert facts['nested'] is True


# -- the Cloud Hypervisor binary -------------------------------------------------------------------

def test_binary_version(tmp_path):
    binary = _script(tmp_path, 'cloud-hypervisor', 'echo "cloud-hypervisor v53.0"')
    facts = hostinfo.binary_facts(binary)
    assert facts == {'path': binary, 'present': True, 'executable': True, 'version': '53.0',
                     'version_output': 'cloud-hypervisor v53.0', 'error': None}


def test_binary_version_on_stderr(tmp_path):
    binary = _script(tmp_path, 'ch', 'echo "cloud-hypervisor v48.1.2" >&2')
    facts = hostinfo.binary_facts(binary)
    assert facts['version'] == '48.1.2'
    assert facts['error'] is None


def test_binary_exits_nonzero(tmp_path):
    binary = _script(tmp_path, 'ch', 'echo "cloud-hypervisor v53.0: broken install"; exit 3')
    facts = hostinfo.binary_facts(binary)
    assert facts['present'] and facts['executable']
    assert facts['version'] is None
    assert facts['version_output'] == 'cloud-hypervisor v53.0: broken install'
    assert 'exited 3' in facts['error']


def test_binary_without_version_in_output(tmp_path):
    binary = _script(tmp_path, 'ch', 'echo "hello"')
    facts = hostinfo.binary_facts(binary)
    assert facts['version'] is None
    assert 'exited 0' in facts['error']


def test_binary_not_executable(tmp_path):
    binary = _script(tmp_path, 'ch', 'echo "cloud-hypervisor v53.0"', mode=0o644)
    facts = hostinfo.binary_facts(binary)
    assert facts['present'] is True
    assert facts['executable'] is False
    assert facts['version'] is None
    assert facts['error'] == '%s is not executable' % binary


def test_binary_cannot_be_run(tmp_path):
    # executable, but the kernel refuses it (bad interpreter): reported, not raised
    path = tmp_path / 'ch'
    path.write_text('#!/no/such/interpreter\n')
    os.chmod(str(path), 0o755)
    facts = hostinfo.binary_facts(str(path))
    assert facts['executable'] is True
    assert facts['version'] is None
    assert facts['error'].startswith('cannot run %s --version' % path)


def test_binary_that_hangs_times_out(tmp_path):
    binary = _script(tmp_path, 'ch', 'exec sleep 30')
    facts = hostinfo.binary_facts(binary, timeout=0.5)
    assert facts['version'] is None
    assert 'timed out' in facts['error']


@pytest.mark.parametrize('binary', ['/no/such/cloud-hypervisor', '', None])
def test_binary_missing(binary):
    facts = hostinfo.binary_facts(binary)
    assert facts == {'path': binary, 'present': False, 'executable': False, 'version': None,
                     'version_output': None, 'error': None}


def test_binary_is_a_directory(tmp_path):
    facts = hostinfo.binary_facts(str(tmp_path))
    assert facts['present'] is False


# -- firmware, devices, /proc files -------------------------------------------------------------------

def test_firmware_facts(tmp_path):
    (tmp_path / 'hypervisor-fw').write_bytes(b'\0' * 16)
    (tmp_path / 'CLOUDHV.fd').mkdir()            # a directory is not a firmware file
    facts = hostinfo.firmware_facts(str(tmp_path))
    assert facts == {'dir': str(tmp_path), 'present': ['hypervisor-fw'],
                     'missing': ['CLOUDHV.fd', 'CLOUDHV_EFI.fd']}


def test_firmware_facts_all_present(tmp_path):
    for name in hostinfo.FIRMWARE_FILES:
        (tmp_path / name).write_bytes(b'fw')
    facts = hostinfo.firmware_facts(str(tmp_path))
    assert facts['present'] == sorted(hostinfo.FIRMWARE_FILES)
    assert facts['missing'] == []


def test_firmware_dir_missing(tmp_path):
    facts = hostinfo.firmware_facts(str(tmp_path / 'nope'))
    assert facts['present'] == []
    assert facts['missing'] == sorted(hostinfo.FIRMWARE_FILES)


def test_device_facts(tmp_path):
    dev = tmp_path / 'kvm'
    dev.write_text('')
    assert hostinfo.device_facts(str(dev)) == {'path': str(dev), 'present': True,
                                               'readable': True, 'writable': True}
    missing = str(tmp_path / 'missing')
    assert hostinfo.device_facts(missing) == {'path': missing, 'present': False,
                                              'readable': False, 'writable': False}


MEMINFO = """\
MemTotal:       16318412 kB
MemFree:         1234567 kB
MemAvailable:   12000000 kB
Buffers:          123456 kB
garbage line without a colon
Weird:             notanumber kB
Empty:
HugePages_Total:       8
HugePages_Free:        6
HugePages_Rsvd:        0
Hugepagesize:       2048 kB
"""


def test_meminfo_parsing(tmp_path):
    path = tmp_path / 'meminfo'
    path.write_text(MEMINFO)
    assert hostinfo.meminfo(str(path)) == {
        'total_bytes': 16318412 * 1024,
        'available_bytes': 12000000 * 1024,
        'hugepages_total': 8,            # a page count: no kB unit, not scaled
        'hugepages_free': 6,
        'hugepage_size_bytes': 2048 * 1024,
    }


def test_meminfo_missing_file(tmp_path):
    facts = hostinfo.meminfo(str(tmp_path / 'nope'))
    assert facts == {'total_bytes': None, 'available_bytes': None, 'hugepages_total': None,
                     'hugepages_free': None, 'hugepage_size_bytes': None}


def test_meminfo_of_this_host():
    facts = hostinfo.meminfo()
    assert facts['total_bytes'] > 0
    assert facts['total_bytes'] % 1024 == 0


def test_cpu_flags_x86(tmp_path):
    path = tmp_path / 'cpuinfo'
    path.write_text('processor\t: 0\nflags\t\t: fpu vme vmx avx2 hypervisor sse pdpe1gb\n'
                    'processor\t: 1\nflags\t\t: fpu svm\n')
    # only the first CPU's flags line is read; only virtualization-related flags are kept
    assert hostinfo.cpu_flags(str(path)) == ['avx2', 'hypervisor', 'pdpe1gb', 'vmx']


def test_cpu_flags_arm(tmp_path):
    path = tmp_path / 'cpuinfo'
    path.write_text('processor\t: 0\nFeatures\t: fp asimd sve atomics\n')
    assert hostinfo.cpu_flags(str(path)) == ['sve']


def test_cpu_flags_missing_file(tmp_path):
    assert hostinfo.cpu_flags(str(tmp_path / 'nope')) == []


# -- everything together -----------------------------------------------------------------------

def test_gather_on_a_fake_host(tmp_path):
    sys_module = _sys_module(tmp_path, {'kvm_amd': '0'})
    binary = _script(tmp_path, 'cloud-hypervisor', 'echo "cloud-hypervisor v53.0"')
    firmware = tmp_path / 'fw'
    firmware.mkdir()
    (firmware / 'CLOUDHV.fd').write_bytes(b'fw')
    state = tmp_path / 'state'
    for name in ('web1', 'db1'):
        (state / 'vms' / name).mkdir(parents=True)
        (state / 'vms' / name / 'vm.json').write_text(json.dumps({'name': name}))
    (state / 'vms' / 'half-made').mkdir()                 # no record: not a VM
    (state / 'vms' / '.hidden').mkdir()                   # not a valid name
    (state / 'vms' / '.hidden' / 'vm.json').write_text('{}')

    facts = hostinfo.gather(binary, str(firmware), str(state), str(tmp_path / 'run'),
                            sys_module=sys_module)
    assert facts['kvm_module'] == 'kvm_amd'
    assert facts['kvm_modules'] == ['kvm_amd']
    assert facts['nested'] is False
    assert 'nested=0' in facts['nested_reason']
    assert facts['binary']['version'] == '53.0'
    assert facts['firmware']['present'] == ['CLOUDHV.fd']
    assert facts['vms'] == ['db1', 'web1']
    assert facts['state_dir'] == str(state)
    assert facts['run_dir'] == str(tmp_path / 'run')
    assert facts['vhost_net']['module_loaded'] is True
    assert facts['cpus'] == os.cpu_count()
    assert set(facts['kvm']) == {'path', 'present', 'readable', 'writable'}
    # the run touched nothing: no state or run directory was created
    assert not (tmp_path / 'run').exists()
    json.dumps(facts)       # module results must be JSON-serializable


def test_gather_without_kvm_and_without_state(tmp_path):
    sys_module = _sys_module(tmp_path, {})
    facts = hostinfo.gather(str(tmp_path / 'missing-binary'), str(tmp_path / 'missing-fw'),
                            str(tmp_path / 'missing-state'), str(tmp_path / 'missing-run'),
                            sys_module=sys_module)
    assert facts['kvm_module'] is None
    assert facts['kvm_modules'] == []
    assert facts['nested'] is None
    assert facts['nested_reason']
    assert facts['binary']['present'] is False
    assert facts['firmware']['present'] == []
    assert facts['vms'] == []
    assert facts['vhost_net']['module_loaded'] is True     # the fake tree has vhost_net
    assert not os.path.exists(str(tmp_path / 'missing-state'))


def test_gather_on_this_host_matches_sys_module():
    """Whatever this machine is (kvm_intel, kvm_amd, kvm_pvm or no KVM), the facts agree with
    what /sys/module shows."""
    facts = hostinfo.gather('/no/such/binary', '/no/such/fw', '/no/such/state', '/no/such/run')
    loaded = sorted(n for n in os.listdir('/sys/module') if n.startswith('kvm_'))
    assert facts['kvm_modules'] == loaded
    vendor = [m for m in loaded if m in ('kvm_intel', 'kvm_amd')]
    if vendor:
        assert facts['kvm_module'] == vendor[0]
        path = '/sys/module/%s/parameters/nested' % vendor[0]
        with open(path) as handle:
            value = handle.read().strip()
        assert facts['nested'] is (value in ('Y', 'y', '1'))
    else:
        assert facts['kvm_module'] == (loaded[0] if loaded else None)
        assert facts['nested'] is None
        assert facts['nested_reason']
    assert facts['kvm']['present'] == os.path.exists('/dev/kvm')
    assert not facts['kvm']['present'] or stat.S_ISCHR(os.stat('/dev/kvm').st_mode)
