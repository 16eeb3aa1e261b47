# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DHCP and DNS on a ch_network bridge: one dnsmasq per bridge.

* :func:`normalize_dhcp` validates ch_network's ``dhcp`` option (OptionError naming the
  suboption); :func:`check_against_bridge` checks it against the bridge's addresses and fills in
  the defaults that depend on them (router);
* :func:`render_config` is pure: the dnsmasq configuration file's text;
* :func:`nic_files` is pure: the per-NIC files of a VM (a ``dhcp-hostsdir`` entry
  ``mac[,address],name`` and, for a static address, a ``hostsdir`` entry ``address name``),
  which dnsmasq re-reads by itself (inotify), without a restart;
* :class:`Dnsmasq` runs the process the way the VMMs run (process.py): detached, pid file,
  PID-reuse-safe liveness (the pid file counts only while /proc/<pid>/cmdline names dnsmasq and
  this bridge's configuration file), stopped with SIGTERM then SIGKILL;
* :func:`read_leases` parses the lease file, :func:`release` sends a DHCPRELEASE for a lease
  of a removed VM, so that its name leaves the DNS at once.

Layout (store.Layout): ``<run_dir>/dhcp/<bridge>/`` holds ``dnsmasq.conf``, ``dnsmasq.pid``,
``settings.json`` (what ch_vm checks ``networks[].address`` against), ``hosts/`` (dhcp-hostsdir)
and ``names/`` (hostsdir); ``<state_dir>/dhcp/<bridge>.leases`` and ``<bridge>.log`` survive a
reboot. No Ansible imports, nothing heavy: ch_vm reads the settings on its no-change path.
"""


import errno
import fcntl
import ipaddress
import json
import os
import random
import re
import shutil
import socket
import struct
import time

from ansible_collections.cloudhv.ch.plugins.module_utils.errors import (
    HostError,
    MissingDependency,
    OptionError,
)
from ansible_collections.cloudhv.ch.plugins.module_utils import process
from ansible_collections.cloudhv.ch.plugins.module_utils.fsutil import unlink_quiet
from ansible_collections.cloudhv.ch.plugins.module_utils.store import read_text

SBIN_DIRS = ('/usr/local/sbin', '/usr/sbin', '/sbin')
DNSMASQ_UMASK = 0o077
LEASE_TIME_RE = re.compile(r'^(\d+)([smhdw]?)$')
LEASE_UNITS = {'': 1, 's': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800}
MIN_LEASE = 120                 # dnsmasq raises anything shorter to two minutes
DOMAIN_RE = re.compile(r'^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)'
                       r'(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$')
MAC_RE = re.compile(r'^([0-9a-f]{2}:){5}[0-9a-f]{2}$')
START_TIMEOUT = 5.0


# ---------------------------------------------------------------------------------------------
# ch_network's dhcp option

def _ipv4(value, option):
    try:
        return ipaddress.IPv4Address(str(value).strip())
    except ValueError:
        raise OptionError(option, "%r is not an IPv4 address" % (value,))


def parse_lease_time(value, option='dhcp.lease_time'):
    """'1h', '30m', '12h', '3600', 'infinite' -> the same text, normalized; else OptionError."""
    text = str(value).strip().lower() if value is not None else '1h'
    if text == 'infinite':
        return text
    match = LEASE_TIME_RE.match(text)
    if not match:
        raise OptionError(option, "%r is not a lease time: use seconds or a number with m, h, d or w "
                          "(30m, 12h, 7d), or infinite" % (value,))
    seconds = int(match.group(1)) * LEASE_UNITS[match.group(2)]
    if seconds < MIN_LEASE:
        raise OptionError(option, "%r is shorter than two minutes, the shortest lease dnsmasq gives" % (value,))
    return '%d%s' % (int(match.group(1)), match.group(2))


def normalize_dhcp(dhcp):
    """Validate ``dhcp`` on its own (syntax, ranges in order); None stays None (no server)."""
    if dhcp is None:
        return None
    if not isinstance(dhcp, dict):
        raise OptionError('dhcp', "must be a dict (ranges, lease_time, dns, domain, router, dns_servers)")
    ranges = []
    for index, item in enumerate(dhcp.get('ranges') or []):
        option = 'dhcp.ranges[%d]' % index
        first, sep, last = str(item).partition('-')
        if not sep:
            raise OptionError(option, "%r is not a range: write it as 'start-end' (10.77.0.100-10.77.0.199)" % (item,))
        start, end = _ipv4(first, option), _ipv4(last, option)
        if start > end:
            raise OptionError(option, "%r starts after it ends" % (item,))
        ranges.append('%s-%s' % (start, end))
    domain = dhcp.get('domain')
    if domain is not None:
        domain = str(domain).strip().rstrip('.').lower()
        if not DOMAIN_RE.match(domain):
            raise OptionError('dhcp.domain', "%r is not a DNS domain name" % (dhcp.get('domain'),))
    router = dhcp.get('router')
    if router is not None:
        router = str(_ipv4(router, 'dhcp.router'))
    servers = [str(_ipv4(s, 'dhcp.dns_servers[%d]' % i)) for i, s in enumerate(dhcp.get('dns_servers') or [])]
    dns = dhcp.get('dns')
    return {
        'ranges': ranges,
        'lease_time': parse_lease_time(dhcp.get('lease_time')),
        'dns': True if dns is None else bool(dns),
        'domain': domain,
        'router': router,
        'dns_servers': servers,
    }


def _ipv4_interfaces(addresses):
    return [i for i in (ipaddress.ip_interface(a) for a in addresses or []) if i.version == 4]


def check_against_bridge(dhcp, addresses, nat, bridge):
    """The dhcp settings checked against the bridge's addresses (CIDR strings) as they will be,
    with the router filled in (the bridge's address in the router's subnet with NAT, none
    without). Raises OptionError before anything changes."""
    ifaces = _ipv4_interfaces(addresses)
    if not ifaces:
        raise OptionError('dhcp', "bridge %s has no IPv4 address; DHCP needs one (set addresses, "
                          "e.g. [10.77.0.1/24])" % bridge)
    own = set(i.ip for i in ifaces)
    for index, item in enumerate(dhcp['ranges']):
        option = 'dhcp.ranges[%d]' % index
        start, end = (ipaddress.IPv4Address(x) for x in item.split('-'))
        net = next((i.network for i in ifaces if start in i.network and end in i.network), None)
        if net is None:
            raise OptionError(option, "%s is not inside the subnet of one of the bridge's addresses (%s)"
                              % (item, ', '.join(str(i) for i in ifaces)))
        if net.prefixlen < 31 and (start == net.network_address or end == net.broadcast_address):
            raise OptionError(option, "%s includes the network or broadcast address of %s" % (item, net))
        inside = sorted(str(a) for a in own if start <= a <= end)
        if inside:
            raise OptionError(option, "%s contains the bridge's own address %s" % (item, ', '.join(inside)))
    router = dhcp['router']
    routers = {}        # subnet -> the router its clients get
    if router is not None:
        net = next((i.network for i in ifaces if ipaddress.IPv4Address(router) in i.network), None)
        if net is None:
            raise OptionError('dhcp.router', "%s is not inside the subnet of one of the bridge's addresses (%s)"
                              % (router, ', '.join(str(i) for i in ifaces)))
        routers[str(net)] = router
    elif nat:
        # the bridge's address in each subnet; ``router`` shows the first
        for iface in ifaces:
            routers.setdefault(str(iface.network), str(iface.ip))
        router = str(ifaces[0].ip)
    out = dict(dhcp, router=router, routers=routers)
    out['addresses'] = [str(i) for i in ifaces]
    out['ipv6_prefixes'] = [str(i.network) for i in (ipaddress.ip_interface(a) for a in addresses)
                            if i.version == 6 and i.network.prefixlen == 64 and not i.ip.is_link_local]
    return out


def render_config(bridge, settings, paths):
    """The dnsmasq configuration for ``bridge``: pure text, compared byte for byte to decide
    whether the server must restart."""
    lines = [
        '# cloudhv.ch ch_network: DHCP and DNS for bridge %s. Written by the module: edits are overwritten.' % bridge,
        'interface=%s' % bridge,
        'except-interface=lo',
        'bind-dynamic',
        'user=root',
        'pid-file=',
        'log-facility=-',
        'log-dhcp',
        'no-hosts',
        'dhcp-authoritative',
        'dhcp-leasefile=%s' % paths['leases'],
        'dhcp-hostsdir=%s' % paths['hosts'],
        'hostsdir=%s' % paths['names'],
    ]
    # one tag per IPv4 subnet (net0, net1, ...): its ranges set it, its router option follows it
    nets = []
    for iface in _ipv4_interfaces(settings['addresses']):
        if iface.network not in nets:
            nets.append(iface.network)
    covered = set()
    for item in settings['ranges']:
        start, end = item.split('-')
        net = next(n for n in nets if ipaddress.IPv4Address(start) in n)
        covered.add(net)
        lines.append('dhcp-range=set:net%d,%s,%s,%s,%s' % (nets.index(net), start, end, net.netmask,
                                                           settings['lease_time']))
    for index, net in enumerate(nets):
        if net not in covered:
            # static leases only (ch_vm networks[].address) in a subnet without a range
            lines.append('dhcp-range=set:net%d,%s,static,%s,%s'
                         % (index, net.network_address, net.netmask, settings['lease_time']))
    routers = settings.get('routers') or {}
    for index, net in enumerate(nets):
        if str(net) in routers:
            lines.append('dhcp-option=tag:net%d,option:router,%s' % (index, routers[str(net)]))
        else:
            lines.append('dhcp-option=tag:net%d,option:router' % index)     # no router option at all
    if settings['dns_servers']:
        lines.append('dhcp-option=option:dns-server,%s' % ','.join(settings['dns_servers']))
    if settings['dns']:
        lines += ['domain-needed', 'bogus-priv']
        if settings['domain']:
            lines += ['domain=%s' % settings['domain'], 'local=/%s/' % settings['domain'], 'expand-hosts']
    else:
        lines.append('port=0')
        if settings['domain']:
            lines.append('domain=%s' % settings['domain'])
    if settings['ipv6_prefixes']:
        lines += ['enable-ra', 'dhcp-range=::,constructor:%s,ra-only,64,%s' % (bridge, settings['lease_time'])]
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------------------------
# the VMs' files (written by ch_network from the records, and by ch_vm)

def nic_file_name(vm, index):
    """``<vm>.<nic index>``: VM names have no dot, so a VM's files are ``<vm>.*``."""
    return '%s.%d' % (vm, index)


def nic_files(vm, networks, bridge):
    """{file name: (hosts line, names line or None)} of the VM's NICs on ``bridge``."""
    out = {}
    for index, net in enumerate(networks or []):
        if net.get('bridge') != bridge or not net.get('mac'):
            continue
        address = net.get('address')
        if address:
            out[nic_file_name(vm, index)] = ('%s,%s,%s\n' % (net['mac'], address, vm), '%s %s\n' % (address, vm))
        else:
            out[nic_file_name(vm, index)] = ('%s,%s\n' % (net['mac'], vm), None)
    return out


def bridges_of(networks):
    return sorted(set(n['bridge'] for n in networks or [] if n.get('bridge')))


class Paths:
    """Where the files of one bridge's server live (see the module docstring)."""

    def __init__(self, layout, bridge):
        self.bridge = bridge
        self.dir = os.path.join(layout.run_dir, 'dhcp', bridge)
        self.conf = os.path.join(self.dir, 'dnsmasq.conf')
        self.pid = os.path.join(self.dir, 'dnsmasq.pid')
        self.settings = os.path.join(self.dir, 'settings.json')
        self.hosts = os.path.join(self.dir, 'hosts')
        self.names = os.path.join(self.dir, 'names')
        self.state_dir = os.path.join(layout.state_dir, 'dhcp')
        self.leases = os.path.join(self.state_dir, '%s.leases' % bridge)
        self.log = os.path.join(self.state_dir, '%s.log' % bridge)

    def as_dict(self):
        return {'leases': self.leases, 'hosts': self.hosts, 'names': self.names}


def read_settings(layout, bridge):
    """The settings of the bridge's DHCP server as ch_network wrote them, or None."""
    text = read_text(Paths(layout, bridge).settings)
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def read_nic_files(paths):
    """{file name: (hosts line, names line or None)} as they are in the bridge's directories."""
    out = {}
    try:
        names = os.listdir(paths.hosts)
    except OSError:
        return out
    for name in names:
        if name.startswith('.'):
            continue
        out[name] = (read_text(os.path.join(paths.hosts, name)), read_text(os.path.join(paths.names, name)))
    return out


def _write_file(path, text):
    # dnsmasq's inotify ignores dot files: it reads the file once it is renamed into place
    tmp = os.path.join(os.path.dirname(path), '.%s.tmp.%d' % (os.path.basename(path), os.getpid()))
    with open(tmp, 'w') as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)
    os.rename(tmp, path)


def write_nic_files(paths, changes):
    """Apply {file name: (hosts line, names line or None) or None (remove)}. The directories
    must exist (ch_network makes them). Each file is written under a temporary name and renamed,
    so dnsmasq only ever reads whole files."""
    for name, lines in sorted(changes.items()):
        hosts, names = lines if lines else (None, None)
        for directory, text in ((paths.hosts, hosts), (paths.names, names)):
            path = os.path.join(directory, name)
            if text is None:
                unlink_quiet(path)
            elif read_text(path) != text:
                _write_file(path, text)


def nic_changes(current, wanted, prefix=None):
    """The changes from ``current`` to ``wanted`` ({name: lines}); with ``prefix`` only files
    whose name starts with it are considered (one VM's)."""
    changes = {}
    for name, lines in wanted.items():
        if current.get(name) != lines:
            changes[name] = lines
    for name in current:
        if name not in wanted and (prefix is None or name.startswith(prefix)):
            changes[name] = None
    return changes


def claimed_addresses(paths, exclude_vm=None):
    """{address: vm} of the static addresses in the bridge's hosts files (other VMs only)."""
    found = {}
    for name, (hosts, _names) in read_nic_files(paths).items():
        vm = name.rsplit('.', 1)[0]
        if vm == exclude_vm or not hosts:
            continue
        fields = hosts.strip().split(',')
        if len(fields) == 3:
            found[fields[1]] = vm
    return found


def check_vm_addresses(layout, vm, networks):
    """ch_vm's ``networks[].address``: on a bridge with this collection's DHCP server, inside one
    of its subnets, not the bridge's own address, claimed by no other VM (and not twice by this
    one). Raises OptionError naming the option (and both VMs), reads files only."""
    seen = {}
    for index, net in enumerate(networks or []):
        address = net.get('address')
        if not address:
            continue
        option = 'networks[%d].address' % index
        bridge = net.get('bridge')
        settings = read_settings(layout, bridge)
        if settings is None:
            raise OptionError(option, "bridge %s has no DHCP server of this collection (in %s): set dhcp on its "
                              "cloudhv.ch.ch_network task first" % (bridge, layout.run_dir))
        ip = ipaddress.IPv4Address(address)
        ifaces = _ipv4_interfaces(settings.get('addresses'))
        if not any(ip in i.network for i in ifaces):
            raise OptionError(option, "%s is not inside the subnet of bridge %s (%s)"
                              % (address, bridge, ', '.join(str(i) for i in ifaces)))
        if any(ip == i.ip for i in ifaces):
            raise OptionError(option, "%s is the address of bridge %s itself" % (address, bridge))
        if any(ip in (i.network.network_address, i.network.broadcast_address) for i in ifaces
               if i.network.prefixlen < 31):
            raise OptionError(option, "%s is the network or broadcast address of bridge %s's subnet"
                              % (address, bridge))
        if (bridge, address) in seen:
            raise OptionError(option, "%s is already networks[%d].address of VM %s" % (address, seen[(bridge, address)], vm))
        seen[(bridge, address)] = index
        other = claimed_addresses(Paths(layout, bridge), exclude_vm=vm).get(address)
        if other:
            raise OptionError(option, "%s on bridge %s is claimed by VM %s and by VM %s; each VM needs an address "
                              "of its own" % (address, bridge, other, vm))


def vm_nic_changes(layout, vm, networks, old_networks=()):
    """{bridge: changes} that make the VM's hosts files match ``networks`` on every bridge with a
    DHCP server of this collection (and drop its files from bridges it left)."""
    out = {}
    for bridge in sorted(set(bridges_of(networks)) | set(bridges_of(old_networks))):
        paths = Paths(layout, bridge)
        if not os.path.isdir(paths.hosts):
            continue
        current = dict((k, v) for k, v in read_nic_files(paths).items() if k.startswith(vm + '.'))
        changes = nic_changes(current, nic_files(vm, networks, bridge), prefix=vm + '.')
        if changes:
            out[bridge] = changes
    return out


def apply_vm_changes(layout, changes):
    """Write the changes of :func:`vm_nic_changes` (or of :func:`vm_removal`), each bridge's under
    its lock (:func:`bridge_lock`): a static address is claimed only if no other VM's file holds it
    by then. :func:`check_vm_addresses` checked it before the VM's lock was taken, but two VMs
    converging at once (two runs, or ch_vms's threads) could both have passed that check."""
    for bridge, files in sorted(changes.items()):
        paths = Paths(layout, bridge)
        with bridge_lock(paths):
            _check_claims(paths, files)
            write_nic_files(paths, files)


class bridge_lock:  # pylint: disable=invalid-name
    """An exclusive flock on ``<run_dir>/dhcp/<bridge>/.hosts.lock`` (a dot file: dnsmasq reads
    only the hosts and names directories) while one VM's files of that bridge are checked and
    written. flock is per open file, so it also excludes the threads of one process."""

    def __init__(self, paths):
        self.path = os.path.join(paths.dir, '.hosts.lock')
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            self.fd = None
            raise
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)      # releases the lock
            self.fd = None
        return False


def _check_claims(paths, files):
    """Refuse to write a hosts line whose address another VM's file holds (see apply_vm_changes)."""
    claimed = None
    for name, lines in sorted(files.items()):
        if not lines or not lines[0]:
            continue
        fields = lines[0].strip().split(',')
        if len(fields) != 3:
            continue
        vm, index = name.rsplit('.', 1)
        if claimed is None:
            claimed = claimed_addresses(paths)
        other = claimed.get(fields[1])
        if other and other != vm:
            raise OptionError('networks[%s].address' % index, "%s on bridge %s is claimed by VM %s and by VM %s; each "
                              "VM needs an address of its own" % (fields[1], paths.bridge, other, vm))


def vm_removal(layout, vm, networks):
    """What removing the VM takes on each bridge with a DHCP server: ({bridge: file changes},
    [(bridge, lease)] of the leases its MACs hold)."""
    changes = vm_nic_changes(layout, vm, [], networks)
    leases = []
    for bridge in bridges_of(networks):
        macs = set(n['mac'] for n in networks if n.get('bridge') == bridge and n.get('mac'))
        leases += [(bridge, lease) for lease in read_leases(Paths(layout, bridge).leases) if lease['mac'] in macs]
    return changes, leases


def release_leases(layout, leases):
    """DHCPRELEASE each (bridge, lease) to the bridge's server, from the bridge's address in the
    lease's subnet (as a client would), so that the lease and its name go now."""
    for bridge, lease in leases:
        ip = ipaddress.IPv4Address(lease['ip'])
        server = next((i.ip for i in _ipv4_interfaces((read_settings(layout, bridge) or {}).get('addresses'))
                       if ip in i.network), None)
        if server is not None:
            release(bridge, lease['ip'], lease['mac'], str(server))


def nic_address(layout, net):
    """(address, source) of a NIC: its static address, else its lease on its bridge, else (None, None)."""
    if net.get('address'):
        return net['address'], 'static'
    if net.get('bridge') and net.get('mac'):
        for lease in read_leases(Paths(layout, net['bridge']).leases):
            if lease['mac'] == net['mac']:
                return lease['ip'], 'lease'
    return None, None


# ---------------------------------------------------------------------------------------------
# leases

def read_leases(path):
    """IPv4 leases of a dnsmasq lease file: [{mac, ip, hostname, expiry}] sorted by ip
    (expiry: seconds since the epoch, 0 for an infinite lease)."""
    text = read_text(path) or ''
    leases = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or not MAC_RE.match(fields[1].lower()):
            continue
        try:
            ip = ipaddress.IPv4Address(fields[2])
            expiry = int(fields[0])
        except ValueError:
            continue
        leases.append({'mac': fields[1].lower(), 'ip': str(ip),
                       'hostname': None if fields[3] == '*' else fields[3], 'expiry': expiry})
    return sorted(leases, key=lambda lease: ipaddress.IPv4Address(lease['ip']))


def release(bridge, ip, mac, server):
    """Send dnsmasq a DHCPRELEASE for ``ip``/``mac`` to its address ``server``, bound to the bridge (what
    dnsmasq's dhcp_release tool does): the lease and its DNS name go at once. Best effort:
    returns False when the packet could not be sent."""
    packet = struct.pack('!BBBBIHH4s4s4s4s16s64s128s', 1, 1, 6, 0, random.getrandbits(32), 0, 0,
                         socket.inet_aton(ip), b'\0' * 4, b'\0' * 4, b'\0' * 4,
                         bytes.fromhex(mac.replace(':', '')) + b'\0' * 10, b'', b'')
    packet += b'\x63\x82\x53\x63' + bytes([53, 1, 7, 54, 4]) + socket.inet_aton(server) + b'\xff'
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, bridge.encode())
        sock.sendto(packet, (server, 67))
        return True
    except OSError:
        return False
    finally:
        sock.close()


# ---------------------------------------------------------------------------------------------
# the process

def find_dnsmasq():
    path = shutil.which('dnsmasq', path=os.pathsep.join([os.environ.get('PATH', '')] + list(SBIN_DIRS)))
    if not path:
        raise MissingDependency('dnsmasq', reason='(the dnsmasq binary, package dnsmasq-base on Debian) to run '
                                'DHCP and DNS on the bridge (dhcp)')
    return path


class Dnsmasq:
    """The dnsmasq of one bridge."""

    def __init__(self, layout, bridge, binary=None):
        self.paths = Paths(layout, bridge)
        self.binary = binary

    def pid(self):
        """The live server's pid, or None (never started, dead, or the PID was reused)."""
        return process.running_pid(self.paths.pid, self.paths.conf, self.binary)

    def argv(self):
        return [self.binary or find_dnsmasq(), '--keep-in-foreground', '--conf-file=%s' % self.paths.conf]

    def config(self):
        return read_text(self.paths.conf)

    def write(self, text, settings):
        """The configuration and settings files, and the directories the server reads."""
        for directory in (os.path.dirname(self.paths.dir), self.paths.dir, self.paths.hosts, self.paths.names,
                          self.paths.state_dir):
            _ensure_dir(directory)
        _write_file(self.paths.conf, text)
        _write_file(self.paths.settings, json.dumps(settings, indent=2, sort_keys=True) + '\n')

    def start(self):
        """Start detached in the calling thread's network namespace; return the pid once dnsmasq
        logs that it started (configuration errors and busy ports make it exit before)."""
        argv = self.argv()
        self.binary = argv[0]
        try:
            proc, offset = process.spawn_detached(argv, self.paths.log, DNSMASQ_UMASK)
        except OSError as exc:
            raise HostError("cannot start %s: %s" % (argv[0], exc))
        process.write_pid(self.paths.pid, proc.pid)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.exited(proc.pid, proc):
                unlink_quiet(self.paths.pid)
                raise HostError("dnsmasq for bridge %s exited (status %s) as it started; last lines of %s:\n%s"
                                % (self.paths.bridge, proc.poll(), self.paths.log,
                                   process.log_tail(self.paths.log, offset)), log_file=self.paths.log)
            if 'started, version' in process.log_tail(self.paths.log, offset):
                return proc.pid
            if time.monotonic() >= deadline:
                process.terminate(proc.pid)
                unlink_quiet(self.paths.pid)
                raise HostError("dnsmasq for bridge %s did not start within %s s; last lines of %s:\n%s"
                                % (self.paths.bridge, START_TIMEOUT, self.paths.log,
                                   process.log_tail(self.paths.log, offset)), log_file=self.paths.log)
            time.sleep(0.01)

    def stop(self):
        """Stop the server (SIGTERM, then SIGKILL); True when one was running."""
        pid = self.pid()
        if pid is not None:
            try:
                process.terminate(pid)
            except OSError as exc:
                raise HostError("cannot stop dnsmasq (pid %d) of bridge %s: %s" % (pid, self.paths.bridge, exc))
        unlink_quiet(self.paths.pid)
        return pid is not None

    def remove(self):
        """Stop the server and remove every file of it (configuration, hosts files, leases, log)."""
        self.stop()
        if os.path.isdir(self.paths.dir):
            shutil.rmtree(self.paths.dir)
        for path in (self.paths.leases, self.paths.log):
            unlink_quiet(path)


def _ensure_dir(path):
    """A private directory (and its parents, e.g. a new state_dir)."""
    try:
        os.makedirs(path, 0o700)
    except OSError as exc:
        if exc.errno != errno.EEXIST or not os.path.isdir(path):
            raise
