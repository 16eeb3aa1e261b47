# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only facts about a virtualization host. Never raises on an unusual host: every probe
that cannot be answered reports ``None`` with a reason. No Ansible imports here."""


import os
import re
import subprocess

from ansible_collections.cloudhv.ch.plugins.module_utils.store import Layout, read_text

FIRMWARE_FILES = ('hypervisor-fw', 'CLOUDHV.fd', 'CLOUDHV_EFI.fd')
# KVM vendor modules and where they keep their nested-virtualization switch.
NESTED_PARAMS = {'kvm_intel': '/sys/module/kvm_intel/parameters/nested',
                 'kvm_amd': '/sys/module/kvm_amd/parameters/nested'}
VERSION_RE = re.compile(r'v?(\d+\.\d+(?:\.\d+)?)')


def device_facts(path):
    present = os.path.exists(path)
    return {'path': path, 'present': present,
            'readable': present and os.access(path, os.R_OK),
            'writable': present and os.access(path, os.W_OK)}


def kvm_modules(sys_module='/sys/module'):
    """KVM vendor modules loaded (kvm_intel, kvm_amd, kvm_pvm, ...), without the core 'kvm'."""
    try:
        names = os.listdir(sys_module)
    except OSError:
        return []
    return sorted(n for n in names if n.startswith('kvm_'))


def nested_facts(modules, sys_module='/sys/module'):
    """(nested, reason): True/False from the vendor module's parameter, None when unknown."""
    for mod in ('kvm_intel', 'kvm_amd'):
        if mod in modules:
            path = os.path.join(sys_module, mod, 'parameters', 'nested')
            value = read_text(path)
            if value is None:
                return None, '%s is loaded but %s cannot be read' % (mod, path)
            value = value.strip()
            if value in ('Y', 'y', '1'):
                return True, '%s reports nested=%s' % (path, value)
            if value in ('N', 'n', '0'):
                return False, '%s reports nested=%s' % (path, value)
            return None, '%s has an unexpected value %r' % (path, value)
    if modules:
        return None, ('KVM is provided by %s, which has no nested-virtualization parameter; '
                      'nested support cannot be read from the host' % ', '.join(modules))
    return None, 'no KVM vendor module is loaded (no kvm_intel or kvm_amd in /sys/module)'


def cpu_flags(cpuinfo='/proc/cpuinfo'):
    text = read_text(cpuinfo) or ''
    flags = set()
    for line in text.splitlines():
        if line.startswith('flags') or line.startswith('Features'):
            flags.update(line.split(':', 1)[1].split())
            break
    return sorted(flags & {'vmx', 'svm', 'hypervisor', 'pdpe1gb', 'avx2', 'sve'})


def meminfo(path='/proc/meminfo'):
    out = {}
    for line in (read_text(path) or '').splitlines():
        key, _sep, rest = line.partition(':')
        parts = rest.split()
        if parts:
            try:
                value = int(parts[0])
            except ValueError:
                continue
            out[key] = value * 1024 if len(parts) > 1 and parts[1] == 'kB' else value
    return {'total_bytes': out.get('MemTotal'), 'available_bytes': out.get('MemAvailable'),
            'hugepages_total': out.get('HugePages_Total'), 'hugepages_free': out.get('HugePages_Free'),
            'hugepage_size_bytes': out.get('Hugepagesize')}


def binary_facts(binary, timeout=10):
    facts = {'path': binary, 'present': bool(binary) and os.path.isfile(binary),
             'executable': False, 'version': None, 'version_output': None, 'error': None}
    if not facts['present']:
        return facts
    facts['executable'] = os.access(binary, os.X_OK)
    if not facts['executable']:
        facts['error'] = '%s is not executable' % binary
        return facts
    try:
        proc = subprocess.run([binary, '--version'], stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        facts['error'] = 'cannot run %s --version: %s' % (binary, exc)
        return facts
    text = (proc.stdout or proc.stderr).decode('utf-8', 'replace').strip()
    facts['version_output'] = text
    match = VERSION_RE.search(text)
    if proc.returncode == 0 and match:
        facts['version'] = match.group(1)
    else:
        facts['error'] = '%s --version exited %s: %s' % (binary, proc.returncode, text[:200])
    return facts


def firmware_facts(firmware_dir):
    present = sorted(f for f in FIRMWARE_FILES if os.path.isfile(os.path.join(firmware_dir, f)))
    return {'dir': firmware_dir, 'present': present,
            'missing': sorted(set(FIRMWARE_FILES) - set(present))}


def gather(binary, firmware_dir, state_dir, run_dir, sys_module='/sys/module'):
    modules = kvm_modules(sys_module)
    nested, reason = nested_facts(modules, sys_module)
    vendor = [m for m in modules if m in NESTED_PARAMS]
    return {
        'kvm': device_facts('/dev/kvm'),
        'kvm_module': (vendor or modules or [None])[0],
        'kvm_modules': modules,
        'nested': nested,
        'nested_reason': reason,
        'cpu_flags': cpu_flags(),
        'cpus': os.cpu_count(),
        'memory': meminfo(),
        'tun': device_facts('/dev/net/tun'),
        'vhost_net': dict(device_facts('/dev/vhost-net'),
                          module_loaded=os.path.isdir(os.path.join(sys_module, 'vhost_net'))),
        'binary': binary_facts(binary),
        'firmware': firmware_facts(firmware_dir),
        'vms': Layout(state_dir, run_dir).list_vms(),
        'state_dir': state_dir,
        'run_dir': run_dir,
    }
