# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Module options -> normalized VM spec -> CH VmConfig, and desired-vs-actual comparison.

Pure logic: no I/O except reading the host id and the first bytes of a disk (sniff_image_type), no
Ansible imports. Every bad input raises OptionError naming the option, before anything on the host
is touched.
"""


import copy
import hashlib
import ipaddress
import os
import re
import socket
import uuid

from ansible_collections.cloudhv.ch.plugins.module_utils.errors import OptionError
from ansible_collections.cloudhv.ch.plugins.module_utils.vm_options import new_vm_default
from ansible_collections.cloudhv.ch.plugins.module_utils.vmconfig import check_extra_config

# Taps the collection creates: TAP_PREFIX + 12 hex digits (netlink.py recognises them by it).
TAP_PREFIX = 'chv'
# The collection's image_type values -> CH's DiskConfig.image_type.
CH_IMAGE_TYPES = {'raw': 'Raw', 'qcow2': 'Qcow2', 'vhdx': 'Vhdx', 'fixedvhd': 'FixedVhd'}
_EXTENSIONS = {'.qcow2': 'qcow2', '.vhdx': 'vhdx', '.vhd': 'fixedvhd'}


def detect_image_type(path):
    """Default ``image_type`` from the file name: ``.qcow2`` -> qcow2, ``.vhdx`` -> vhdx,
    ``.vhd`` -> fixedvhd (CH only supports fixed VHDs), anything else -> raw.

    Deliberately by name, not by content: a guest can write any header into a raw disk, and
    trusting it would let the guest change how the host reads its disk. Use
    :func:`sniff_image_type` to warn about an obvious mismatch (e.g. Ubuntu's qcow2 ``.img``).
    """
    return _EXTENSIONS.get(os.path.splitext(str(path))[1].lower(), 'raw')


def sniff_image_type(path):
    """What the file's header says it is: 'qcow2', 'vhdx', 'fixedvhd', 'dynamicvhd' or None
    (raw or unknown). For validation messages only; never to choose a format (see above).

    Here and not in images.py: every run checks its disks' headers, and a no-change run must not
    pay for importing the images engine. Reads 16 bytes at the start and, for a VHD's footer,
    64 bytes 512 from the end."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
    except (OSError, IOError):
        return None
    try:
        head = os.pread(fd, 16, 0)
        size = os.fstat(fd).st_size
        footer = os.pread(fd, 64, size - 512) if size >= 512 else b''
    except (OSError, IOError):
        return None
    finally:
        os.close(fd)
    if head[:4] == b'QFI\xfb':
        return 'qcow2'
    if head[:8] == b'vhdxfile':
        return 'vhdx'
    if footer[:8] == b'conectix' or head[:8] == b'conectix':
        disk_type = footer[60:64] if footer[:8] == b'conectix' else b''
        return 'fixedvhd' if disk_type == b'\x00\x00\x00\x02' else 'dynamicvhd'
    return None


MIB = 1024 * 1024
ACPI_DIMM = 128 * MIB   # CH adds RAM live in DIMMs of a multiple of this (ACPI hotplug)
SIZE_RE = re.compile(r'^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$', re.IGNORECASE)
UNITS = {'': MIB, 'k': 1024, 'm': MIB, 'g': 1024 * MIB, 't': 1024 * 1024 * MIB,
         'p': 1024 * 1024 * 1024 * MIB}
MAC_RE = re.compile(r'^([0-9a-f]{2}:){5}[0-9a-f]{2}$')
CONSOLE_MODES = {'off': 'Off', 'null': 'Null', 'pty': 'Pty', 'tty': 'Tty', 'file': 'File',
                 'socket': 'Socket'}
CIDATA_ID = 'cidata'


def parse_size(value, option, allow_zero=False):
    """Sizes: an integer is MiB; a string takes K/M/G/T/P with optional i/B (all powers of 1024),
    or B alone for bytes: ``512`` ``'512M'`` ``'2G'`` ``'2GiB'`` ``'4096B'`` -> bytes."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise OptionError(option, "expected a size such as 512 (MiB), '512M' or '2G', got %r" % value)
    if isinstance(value, int):
        size = value * MIB
    elif isinstance(value, float) and value.is_integer():
        size = int(value) * MIB
    else:
        match = SIZE_RE.match(str(value))
        if not match:
            raise OptionError(option, "%r is not a size; use an integer (MiB) or a number with a unit "
                              "such as '512M', '2G' or '2GiB'" % (value,))
        unit = match.group(2).lower()
        factor = 1 if not unit and match.group(3).lower() == 'b' else UNITS[unit]  # '100B' is bytes
        size = int(float(match.group(1)) * factor)
    if size < 0 or (size == 0 and not allow_zero):
        raise OptionError(option, "must be greater than zero, got %r" % (value,))
    return size


def human_size(size):
    for unit, factor in (('T', 1024 ** 4), ('G', 1024 ** 3), ('M', MIB), ('K', 1024)):
        if size and size % factor == 0:
            return '%d%s' % (size // factor, unit)
    return '%dB' % size


def host_id():
    """A stable identifier of this host (machine-id, else hostname) for deriving identities."""
    for path in ('/etc/machine-id', '/var/lib/dbus/machine-id'):
        try:
            with open(path) as handle:
                value = handle.read().strip()
            if value:
                return value
        except (IOError, OSError):
            pass
    return socket.gethostname()


def _digest(*parts):
    return hashlib.sha256('\0'.join(str(p) for p in parts).encode('utf-8')).hexdigest()


def multi_queue(net):
    """True when a NIC has more than one queue pair: its tap needs IFF_MULTI_QUEUE."""
    return (net.get('num_queues') or 2) > 2


def tap_name(host, vm, index):
    """15 characters: 'chv' + 12 hex characters of a hash of host, VM name and NIC index."""
    return TAP_PREFIX + _digest('tap', host, vm, index)[:12]


def mac_address(host, vm, index):
    """A locally administered unicast MAC derived from host, VM name and NIC index."""
    raw = bytearray(bytes.fromhex(_digest('mac', host, vm, index)[:12]))
    raw[0] = (raw[0] & 0xfc) | 0x02
    return ':'.join('%02x' % b for b in raw)


def machine_uuid(host, vm):
    """A name-based (version 5) UUID for the VM's SMBIOS identity, stable for host and name."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, 'cloudhv.ch:%s/%s' % (host, vm)))


def _check_int(value, option, minimum=None, maximum=None):
    if value is None:
        return None
    if minimum is not None and value < minimum:
        raise OptionError(option, "must be at least %d, got %d" % (minimum, value))
    if maximum is not None and value > maximum:
        raise OptionError(option, "must be at most %d, got %d" % (maximum, value))
    return value


def _abs_path(value, option, must_exist=False):
    if value is None:
        return None
    if not os.path.isabs(value):
        raise OptionError(option, "must be an absolute path, got %r" % value)
    value = os.path.normpath(value)
    if must_exist and not os.path.exists(value):
        raise OptionError(option, "%s does not exist" % value)
    return value


def _rate_limiter(rate, option, ops_key):
    """{'bandwidth': bytes/s, 'iops'|'pps': n} -> CH rate_limiter_config (1 s token buckets)."""
    if not rate:
        return None
    config = {}
    bandwidth = rate.get('bandwidth')
    ops = rate.get(ops_key)
    if bandwidth is not None:
        _check_int(bandwidth, '%s.bandwidth' % option, minimum=1)
        config['bandwidth'] = {'size': int(bandwidth), 'refill_time': 1000}
    if ops is not None:
        _check_int(ops, '%s.%s' % (option, ops_key), minimum=1)
        config['ops'] = {'size': int(ops), 'refill_time': 1000}
    return config or None


def normalize_disks(disks, vm_dir):
    out = []
    ids = set()
    for index, disk in enumerate(disks or []):
        opt = 'disks[%d]' % index
        path = _abs_path(disk.get('path'), '%s.path' % opt)
        if not path:
            raise OptionError('%s.path' % opt, 'is required')
        if disk.get('size') is not None and disk.get('backing_file'):
            raise OptionError(opt, "size and backing_file are mutually exclusive")
        size = parse_size(disk.get('size'), '%s.size' % opt)
        if size is not None and size % 512:
            raise OptionError('%s.size' % opt, "must be a multiple of 512 bytes, got %d" % size)
        backing = _abs_path(disk.get('backing_file'), '%s.backing_file' % opt)
        image_type = disk.get('image_type')
        explicit_type = image_type is not None
        if image_type is None:
            image_type = 'qcow2' if backing else detect_image_type(path)
        if image_type not in CH_IMAGE_TYPES:
            raise OptionError('%s.image_type' % opt, "must be one of %s" % ', '.join(CH_IMAGE_TYPES))
        if backing and image_type != 'qcow2':
            raise OptionError('%s.image_type' % opt, "a disk with backing_file is a qcow2 overlay; "
                              "image_type must be qcow2, not %s" % image_type)
        disk_id = disk.get('id') or 'disk%d' % index
        if disk_id in ids or disk_id == CIDATA_ID:
            raise OptionError('%s.id' % opt, "id %r is used twice (or is reserved)" % disk_id)
        ids.add(disk_id)
        out.append({
            'path': path, 'readonly': bool(disk.get('readonly')), 'direct': bool(disk.get('direct')),
            'image_type': image_type, 'image_type_explicit': explicit_type, 'id': disk_id,
            'serial': disk.get('serial'),
            'size': size, 'backing_file': backing,
            'rate_limit': _rate_limiter(disk.get('rate_limit'), '%s.rate_limit' % opt, 'iops'),
        })
    return out


def normalize_networks(networks, vm_name, host, recorded=None):
    out = []
    ids = set()
    recorded = recorded or []
    for index, net in enumerate(networks or []):
        opt = 'networks[%d]' % index
        bridge, tap = net.get('bridge'), net.get('tap')
        if bool(bridge) == bool(tap):
            raise OptionError(opt, "set exactly one of bridge (attach to an existing bridge) or "
                              "tap (use an existing tap)")
        for key, value in (('bridge', bridge), ('tap', tap)):
            if value and (len(value) > 15 or re.search(r'[\s/:]', value)):
                raise OptionError('%s.%s' % (opt, key), "%r is not a valid interface name" % value)
        mac = net.get('mac')
        old = recorded[index] if index < len(recorded) else {}
        if mac:
            mac = mac.lower()
            if not MAC_RE.match(mac) or int(mac[:2], 16) & 1:
                raise OptionError('%s.mac' % opt, "%r is not a unicast MAC address" % net.get('mac'))
        elif old.get('mac') and old.get('bridge') == bridge and old.get('user_tap') == tap:
            mac = old['mac']
        else:
            mac = mac_address(host, vm_name, index)
        num_queues = net.get('num_queues')
        if num_queues is not None and (num_queues < 2 or num_queues % 2):
            raise OptionError('%s.num_queues' % opt, "counts RX and TX queues together: use an even "
                              "number >= 2 (2 is one queue pair), got %d" % num_queues)
        ip, mask = net.get('ip'), net.get('mask')
        for key, value in (('ip', ip), ('mask', mask)):
            if value is not None:
                try:
                    ipaddress.ip_address(value)
                except ValueError:
                    raise OptionError('%s.%s' % (opt, key), "%r is not an IP address" % value)
        address = net.get('address')
        if address is not None:
            if not bridge:
                raise OptionError('%s.address' % opt, "is the guest's address on a bridge with DHCP: set bridge, not tap")
            try:
                address = str(ipaddress.IPv4Address(str(address).strip()))
            except ValueError:
                raise OptionError('%s.address' % opt, "%r is not an IPv4 address" % (address,))
        _check_int(net.get('mtu'), '%s.mtu' % opt, minimum=68, maximum=65535)
        net_id = net.get('id') or 'net%d' % index
        if net_id in ids:
            raise OptionError('%s.id' % opt, "id %r is used twice" % net_id)
        ids.add(net_id)
        if bridge:
            tap_if = old.get('tap') if old.get('managed_tap') and old.get('bridge') == bridge else None
            tap_if = tap_if or tap_name(host, vm_name, index)
        else:
            tap_if = tap
        entry = {'bridge': bridge, 'user_tap': tap, 'tap': tap_if, 'managed_tap': bool(bridge),
                 'mac': mac, 'ip': ip, 'mask': mask, 'mtu': net.get('mtu'),
                 'num_queues': num_queues, 'id': net_id,
                 'rate_limit': _rate_limiter(net.get('rate_limit'), '%s.rate_limit' % opt, 'pps')}
        if address:
            entry['address'] = address      # only when set: records without it stay as they were
        out.append(entry)
    return out


def _unset(params, key):
    return params.get(key) is None


def normalize(params, vm_dir, host, record=None):
    """Validate module params and return the normalized spec (a plain JSON-able dict).

    ``record`` is the existing record (or, for a clone, its source's). An option the task leaves
    unset (None) keeps the record's value - an ad hoc ``name=web1 state=stopped`` must not redefine
    the VM, and a ``state=running`` must not hot-remove its disks - and a new VM gets the default
    (vm_options' table: ``new_vm_default``).
    The record also gives the identities to reuse (taps, MACs) and the payload.
    Cloud-init is validated separately (cloudinit.render)."""
    record = record or {}
    old_spec = record.get('spec') or {}

    def kept(key):
        """The recorded value of an option the task leaves unset, else a new VM's."""
        return copy.deepcopy(old_spec[key]) if key in old_spec else new_vm_default(key)

    cpus = _check_int(kept('cpus') if _unset(params, 'cpus') else params['cpus'], 'cpus', minimum=1, maximum=8192)
    max_cpus = params.get('max_cpus')
    if max_cpus is None:
        # defaults to cpus; an existing VM keeps its ceiling, raised when cpus goes above it
        max_cpus = max(cpus, kept('max_cpus'))
    _check_int(max_cpus, 'max_cpus', minimum=1, maximum=8192)
    if cpus > max_cpus:
        raise OptionError('cpus', "cpus (%d) is above max_cpus (%d): raise max_cpus to allow it"
                          % (cpus, max_cpus))
    if _unset(params, 'memory') and 'memory' in old_spec:
        memory = old_spec['memory']
    else:
        memory = parse_size(params.get('memory') if params.get('memory') is not None else new_vm_default('memory'), 'memory')
    if memory % MIB:
        raise OptionError('memory', "must be a whole number of MiB, got %d bytes" % memory)
    if _unset(params, 'memory_hotplug'):
        hotplug = kept('memory_hotplug') or 0
    else:
        hotplug = parse_size(params.get('memory_hotplug'), 'memory_hotplug', allow_zero=True) or 0
    balloon = None if _unset(params, 'balloon') else {}
    if params.get('balloon') and any(v is not None for v in params['balloon'].values()):  # {} removes it
        b = params['balloon']
        bsize = parse_size(b.get('size') if b.get('size') is not None else 0, 'balloon.size',
                           allow_zero=True)
        balloon = {'size': bsize, 'deflate_on_oom': bool(b.get('deflate_on_oom')),
                   'free_page_reporting': bool(b.get('free_page_reporting'))}
    elif balloon is None:
        balloon = kept('balloon')
    balloon = balloon or None
    if balloon and balloon['size'] >= memory + hotplug:
        raise OptionError('balloon.size', "must be smaller than the VM's memory (%s)"
                          % human_size(memory + hotplug))

    firmware = _abs_path(params.get('firmware'), 'firmware')
    kernel = _abs_path(params.get('kernel'), 'kernel')
    initramfs = _abs_path(params.get('initramfs'), 'initramfs')
    cmdline = params.get('cmdline')
    if firmware and kernel:
        raise OptionError('firmware', "firmware and kernel are mutually exclusive: boot either "
                          "firmware (a cloud image) or a kernel directly")
    if firmware or kernel:
        payload = {'firmware': firmware} if firmware else {'kernel': kernel}
        if kernel and cmdline is not None:
            payload['cmdline'] = cmdline
        if kernel and initramfs:
            payload['initramfs'] = initramfs
    elif old_spec.get('payload'):
        payload = copy.deepcopy(old_spec['payload'])
        if cmdline is not None:
            payload['cmdline'] = cmdline
        if initramfs:
            payload['initramfs'] = initramfs
    else:
        payload = None  # checked by the caller when a VM is created
    if (cmdline is not None or initramfs) and not (payload or {}).get('kernel'):
        raise OptionError('cmdline' if cmdline is not None else 'initramfs',
                          "only applies to a VM booted with kernel")

    serial = params.get('serial') or kept('serial')
    console = params.get('console') or kept('console')
    if serial == 'tty' and console == 'tty':
        raise OptionError('serial' if _unset(params, 'console') else 'console',
                          "serial and console cannot both use the tty")
    if _unset(params, 'vsock'):
        vsock = kept('vsock')
    else:   # vsock: {} removes the device
        vsock = None
        if any(v is not None for v in params['vsock'].values()):
            cid = _check_int(params['vsock'].get('cid'), 'vsock.cid', minimum=3, maximum=0xFFFFFFFE)
            if cid is None:
                raise OptionError('vsock.cid', 'is required (an integer >= 3)')
            vsock = {'cid': cid, 'socket': _abs_path(params['vsock'].get('socket'), 'vsock.socket')
                     or os.path.join(vm_dir, 'vsock.sock')}
    if _unset(params, 'devices'):
        devices = kept('devices')
    else:
        devices = [_abs_path(d, 'devices[%d]' % i) for i, d in enumerate(params.get('devices') or [])]
    if _unset(params, 'platform'):
        platform = kept('platform')
    else:   # platform: {} removes it
        p = params['platform']
        platform = dict((k, v) for k, v in (('uuid', p.get('uuid')), ('serial_number', p.get('serial_number')),
                                            ('oem_strings', p.get('oem_strings'))) if v) or None
    extra = params.get('extra_config')
    if extra is not None and not isinstance(extra, dict):
        raise OptionError('extra_config', 'must be a dictionary of VmConfig fields')
    if extra:
        check_extra_config(extra)
    if extra is None:
        extra = kept('extra_config')
    if _unset(params, 'disks'):
        disks = kept('disks')
    else:
        disks = normalize_disks(params.get('disks'), vm_dir)
    if _unset(params, 'networks'):
        networks = kept('networks')
    else:
        networks = normalize_networks(params.get('networks'), os.path.basename(vm_dir), host,
                                      old_spec.get('networks'))
    hugepages = kept('hugepages') if _unset(params, 'hugepages') else params['hugepages']
    shared = kept('shared_memory') if _unset(params, 'shared_memory') else params['shared_memory']
    return {
        'cpus': cpus, 'max_cpus': max_cpus, 'memory': memory, 'memory_hotplug': hotplug,
        'hugepages': bool(hugepages), 'shared_memory': bool(shared),
        'balloon': balloon, 'payload': payload,
        'disks': disks, 'networks': networks,
        'serial': serial, 'console': console, 'vsock': vsock, 'devices': devices,
        'platform': platform, 'extra_config': extra or None,
    }


def disk_config(disk):
    cfg = {'path': disk['path'], 'readonly': disk['readonly'], 'direct': disk['direct'],
           'image_type': CH_IMAGE_TYPES[disk['image_type']], 'id': disk['id']}
    if disk.get('serial'):
        cfg['serial'] = disk['serial']
    if disk.get('backing_file'):
        cfg['backing_files'] = True
    if disk.get('rate_limit'):
        cfg['rate_limiter_config'] = disk['rate_limit']
    return cfg


def cidata_disk_config(path):
    return {'path': path, 'readonly': True, 'direct': False, 'image_type': 'Raw', 'id': CIDATA_ID}


def net_config(net):
    cfg = {'tap': net['tap'], 'mac': net['mac'], 'id': net['id']}
    for key in ('ip', 'mask', 'mtu', 'num_queues'):
        if net.get(key) is not None:
            cfg[key] = net[key]
    if net.get('rate_limit'):
        cfg['rate_limiter_config'] = net['rate_limit']
    return cfg


def _console(mode, path):
    cfg = {'mode': CONSOLE_MODES[mode]}
    if mode == 'file':
        cfg['file'] = path
    elif mode == 'socket':
        cfg['socket'] = path
    return cfg


def build_config(spec, serial_file, serial_socket, console_socket, cidata_path=None):
    """The VmConfig sent to CH for this spec (only the fields we set; CH fills the rest)."""
    config = {
        'cpus': {'boot_vcpus': spec['cpus'], 'max_vcpus': spec['max_cpus']},
        'memory': {'size': spec['memory'], 'shared': spec['shared_memory'],
                   'hugepages': spec['hugepages']},
        'payload': dict(spec['payload'] or {}),
        'serial': _console(spec['serial'], serial_file if spec['serial'] == 'file' else serial_socket),
        'console': _console(spec['console'], serial_file + '.console' if spec['console'] == 'file'
                            else console_socket),
        'rng': {'src': '/dev/urandom'},
    }
    if spec['memory_hotplug']:
        config['memory']['hotplug_size'] = spec['memory_hotplug']
    disks = [disk_config(d) for d in spec['disks']]
    if cidata_path:
        disks.append(cidata_disk_config(cidata_path))
    if disks:
        config['disks'] = disks
    if spec['networks']:
        config['net'] = [net_config(n) for n in spec['networks']]
    if spec['balloon']:
        config['balloon'] = dict(spec['balloon'])
    if spec['vsock']:
        config['vsock'] = dict(spec['vsock'])
    if spec['devices']:
        config['devices'] = [{'path': p, 'id': 'dev%d' % i} for i, p in enumerate(spec['devices'])]
    if spec['platform']:
        config['platform'] = dict(spec['platform'])
    if spec['extra_config']:
        config = deep_merge(config, spec['extra_config'])
    return config


def deep_merge(base, extra):
    """extra merged into a copy of base: dicts recursively, everything else replaced."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def subset_diff(desired, actual, path=''):
    """Paths where ``actual`` differs from ``desired``, looking only at what desired sets.

    CH echoes configs with defaults and auto ids filled in, so extra keys in ``actual`` are fine.
    Lists of dicts with 'id' are matched by id; other lists compare element-wise."""
    diffs = []
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return [path or '.']
        for key, value in desired.items():
            diffs.extend(subset_diff(value, actual.get(key), '%s.%s' % (path, key) if path else key))
        return diffs
    if isinstance(desired, list):
        if not isinstance(actual, list):
            return [path]
        if all(isinstance(d, dict) and 'id' in d for d in desired):
            by_id = dict((a.get('id'), a) for a in actual if isinstance(a, dict))
            for item in desired:
                if item['id'] not in by_id:
                    diffs.append('%s[%s]' % (path, item['id']))
                else:
                    diffs.extend(subset_diff(item, by_id[item['id']], '%s[%s]' % (path, item['id'])))
            return diffs
        if len(desired) != len(actual):
            return [path]
        for index, (d, a) in enumerate(zip(desired, actual)):
            diffs.extend(subset_diff(d, a, '%s[%d]' % (path, index)))
        return diffs
    if desired != actual:
        return [path]
    return []
