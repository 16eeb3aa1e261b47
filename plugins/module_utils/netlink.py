# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host links over netlink (pyroute2): bridges, taps, addresses, per-interface forwarding.

Everything can run inside a named network namespace (``Netlink(netns='tenant1')``, the
namespace being ``/run/netns/tenant1`` as created by ``ip netns add``):

* netlink requests go through one pyroute2 ``IPRoute`` handle whose socket pyroute2 opens
  inside the namespace (``IPRoute(netns=..., flags=0)``: never creates a missing namespace;
  pyroute2 < 0.7.3, which has no ``netns`` argument, opens it while the thread is inside);
* two things are not netlink and depend on the namespace of the calling *thread* when they are
  opened: ``/dev/net/tun`` (a tap is created in the namespace the tun file was opened in) and
  ``/proc/sys/net/...`` (the sysctl tree is the opener's namespace's). For those the calling
  thread enters the namespace with ``setns(2)`` just for the ``open()`` and returns at once
  (:func:`in_netns`). ``setns`` on a network namespace affects only the calling thread, needs
  no fork and no ``ip netns exec``, and the opened file keeps its namespace afterwards.

Tap conventions of the collection (ch_vm imports these):

* collection taps are named ``TAP_PREFIX`` + 12 lowercase hex digits (15 characters, the
  kernel's limit), see :func:`tap_name` and :func:`is_collection_tap`;
* they are persistent taps with ``IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`` (plus
  ``IFF_MULTI_QUEUE`` when the VM's NIC has more than one queue pair), exactly the flags
  Cloud Hypervisor passes to ``TUNSETIFF`` when it opens the tap by name; other flags make
  its open fail with EINVAL.

No Ansible imports here. pyroute2 is imported lazily: a missing library raises
:class:`MissingDependency` when a :class:`Netlink` is first used.
"""


import ctypes
import errno
import fcntl
import ipaddress
import os
import re
import struct
import traceback
from contextlib import contextmanager

from ansible_collections.cloudhv.ch.plugins.module_utils.errors import (
    HostError,
    MissingDependency,
    NetworkError,
    OptionError,
)
from ansible_collections.cloudhv.ch.plugins.module_utils.spec import TAP_PREFIX

TAP_RE = re.compile(r'^%s[0-9a-f]{12}$' % TAP_PREFIX)

IFNAMSIZ = 16                   # including the terminating NUL: names are 1-15 bytes
NETNS_DIR = '/run/netns'

# linux/if_tun.h
TUNSETIFF = 0x400454ca
TUNSETPERSIST = 0x400454cb
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_MULTI_QUEUE = 0x0100
IFF_PERSIST = 0x0800
# The flags CH opens a tap with (net_util::open_tap): a tap must have been created with them.
TAP_FLAGS = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR

IFF_UP = 0x1
CLONE_NEWNET = 0x40000000

_IFNAME_BAD = re.compile(r'[/:\s]')


# ---------------------------------------------------------------------------------------------
# names

def check_ifname(name, option='name'):
    """A valid Linux interface name: 1-15 bytes, no ``/``, ``:`` or whitespace, not . or .."""
    if not isinstance(name, str) or not name:
        raise OptionError(option, "an interface name is required (1-15 characters)")
    if len(name.encode('utf-8')) > IFNAMSIZ - 1:
        raise OptionError(option, "%r is %d characters long; Linux interface names have at most 15"
                          % (name, len(name.encode('utf-8'))))
    if _IFNAME_BAD.search(name) or name in ('.', '..'):
        raise OptionError(option, "%r is not a valid interface name (no '/', ':' or whitespace)" % name)
    return name


def check_netns(name, option='netns'):
    """A network namespace name as ``ip netns`` uses it (a file name under /run/netns)."""
    if not isinstance(name, str) or not name or '/' in name or name in ('.', '..') or '\0' in name:
        raise OptionError(option, "%r is not a valid network namespace name" % (name,))
    return name


def is_collection_tap(name):
    return bool(name) and bool(TAP_RE.match(name))


def tap_flags(multi_queue=False):
    """The TUNSETIFF flags of a collection tap (what CH opens it with)."""
    return TAP_FLAGS | (IFF_MULTI_QUEUE if multi_queue else 0)


# ---------------------------------------------------------------------------------------------
# namespaces

def netns_path(netns):
    return os.path.join(NETNS_DIR, check_netns(netns))


_LIBC = []


def _setns(fd):
    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    if _LIBC[0].setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextmanager
def in_netns(netns):
    """Run the body with the calling thread inside ``netns`` (None: stay where we are).

    Only for opening files whose namespace is fixed at open time (/dev/net/tun, /proc/sys/net).
    """
    if netns is None:
        yield
        return
    try:
        target = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise OptionError('netns', "cannot open network namespace %s: %s" % (netns_path(netns), exc.strerror))
    own = os.open('/proc/thread-self/ns/net', os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _setns(target)
        except OSError as exc:
            raise NetworkError("cannot enter network namespace %s: %s" % (netns, exc.strerror))
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


# ---------------------------------------------------------------------------------------------
# pyroute2

def _import_pyroute2():
    try:
        from pyroute2 import IPRoute  # pylint: disable=import-outside-toplevel
        from pyroute2.netlink.exceptions import NetlinkError  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise MissingDependency('pyroute2', reason='to manage bridges and taps over netlink',
                                exception=traceback.format_exc())
    return IPRoute, NetlinkError


def _attr(msg, name, default=None):
    value = msg.get_attr(name)
    return default if value is None else value


def _linkinfo(msg):
    """(kind, info_data attrs as dict) of a link message."""
    info = msg.get_attr('IFLA_LINKINFO')
    if info is None:
        return None, {}
    kind = info.get_attr('IFLA_INFO_KIND')
    data = info.get_attr('IFLA_INFO_DATA')
    attrs = {}
    if data is not None and hasattr(data, 'get'):
        for key, value in data.get('attrs', []):
            attrs[key] = value
    return kind, attrs


def _tun_flags(data):
    """Rebuild /sys/class/net/<tap>/tun_flags from the IFLA_TUN_* attributes."""
    flags = IFF_TAP if data.get('IFLA_TUN_TYPE') == 2 else IFF_TUN
    if not data.get('IFLA_TUN_PI'):
        flags |= IFF_NO_PI
    if data.get('IFLA_TUN_VNET_HDR'):
        flags |= IFF_VNET_HDR
    if data.get('IFLA_TUN_MULTI_QUEUE'):
        flags |= IFF_MULTI_QUEUE
    if data.get('IFLA_TUN_PERSIST'):
        flags |= IFF_PERSIST
    return flags


class Netlink:
    """One pyroute2 handle per module run, optionally inside a network namespace.

    ``with Netlink(netns='x') as nl: nl.link('br0')``. Errors become NetworkError/HostError.
    """

    def __init__(self, netns=None):
        self.netns = check_netns(netns) if netns is not None else None
        self._ipr = None
        self._netlink_error = None

    # --- lifecycle
    def open(self):
        if self._ipr is None:
            iproute, netlink_error = _import_pyroute2()
            self._netlink_error = netlink_error
            if self.netns is not None:
                if not os.path.exists(netns_path(self.netns)):
                    raise OptionError('netns', "no network namespace named %r (%s does not exist)"
                                      % (self.netns, netns_path(self.netns)))
                try:
                    # flags=0: pyroute2 would otherwise create a missing namespace
                    self._ipr = iproute(netns=self.netns, flags=0)
                except TypeError:
                    # pyroute2 < 0.7.3 (Debian 12 has 0.7.2) has no netns argument; its IPRoute
                    # opens its socket in __init__, on this thread, which keeps the namespace
                    with in_netns(self.netns):
                        self._ipr = iproute()
            else:
                self._ipr = iproute()
        return self

    def close(self):
        if self._ipr is not None:
            try:
                self._ipr.close()
            finally:
                self._ipr = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()
        return False

    @property
    def ipr(self):
        return self.open()._ipr

    def _call(self, what, func, *args, **kwargs):
        try:
            return func(*args, **kwargs)
        except self._netlink_error as exc:
            raise NetworkError("%s failed: %s" % (what, exc), errno=getattr(exc, 'code', None))

    # --- reading
    def _parse(self, msg, names):
        kind, data = _linkinfo(msg)
        master = msg.get_attr('IFLA_MASTER')
        link = {
            'name': msg.get_attr('IFLA_IFNAME'),
            'ifindex': msg['index'],
            'kind': kind,
            'mtu': msg.get_attr('IFLA_MTU'),
            'up': bool(msg['flags'] & IFF_UP),
            'carrier': bool(_attr(msg, 'IFLA_CARRIER', 0)),
            'operstate': msg.get_attr('IFLA_OPERSTATE'),
            'master': names.get(master) if master else None,
            'address': msg.get_attr('IFLA_ADDRESS'),
        }
        if kind == 'tun':
            flags = _tun_flags(data)
            link['tun_flags'] = flags
            link['tap'] = bool(flags & IFF_TAP)
            link['multi_queue'] = bool(flags & IFF_MULTI_QUEUE)
            link['persistent'] = bool(flags & IFF_PERSIST)
        return link

    def links(self):
        """Every link of the namespace, parsed (see :meth:`link`)."""
        msgs = list(self._call('listing links', self.ipr.get_links))
        names = dict((m['index'], m.get_attr('IFLA_IFNAME')) for m in msgs)
        return [self._parse(m, names) for m in msgs]

    def link(self, name):
        """The link called ``name`` or None: dict with name, ifindex, kind (bridge, tun, veth,
        None for a device without a kind such as lo or a physical NIC), mtu, up (admin), carrier
        (for a tap: a process holds it open), master (bridge name or None) and, for tun
        devices, tun_flags (as in /sys/class/net/<name>/tun_flags), tap, multi_queue,
        persistent."""
        check_ifname(name)
        try:
            msgs = self.ipr.link('get', ifname=name)
        except self._netlink_error as exc:
            if getattr(exc, 'code', None) in (errno.ENODEV, errno.ENOENT):
                return None
            raise NetworkError("reading link %s failed: %s" % (name, exc))
        if not msgs:
            return None
        msg = msgs[0]
        names = {}
        master = msg.get_attr('IFLA_MASTER')
        if master:
            found = self._call('reading link %s' % master, self.ipr.link, 'get', index=master)
            names[master] = found[0].get_attr('IFLA_IFNAME') if found else None
        return self._parse(msg, names)

    def _index(self, name):
        link = self.link(name)
        if link is None:
            raise HostError("no interface named %s%s" % (name, self._where()))
        return link['ifindex']

    def _where(self):
        return " in network namespace %s" % self.netns if self.netns else ""

    def bridge_exists(self, name):
        link = self.link(name)
        return link is not None and link['kind'] == 'bridge'

    def ports(self, bridge):
        """Names of the interfaces enslaved to ``bridge``, sorted."""
        return sorted(link['name'] for link in self.links() if link['master'] == bridge)

    def taps_on_bridge(self, bridge):
        """Names of the tap devices attached to ``bridge``, sorted."""
        return sorted(link['name'] for link in self.links()
                      if link['master'] == bridge and link['kind'] == 'tun')

    def addresses(self, name):
        """Addresses of ``name`` as ``addr/prefixlen`` strings (IPv4 first, then IPv6, sorted)."""
        index = self._index(name)
        found = []
        for msg in self._call('listing addresses of %s' % name, self.ipr.get_addr, index=index):
            addr = msg.get_attr('IFA_ADDRESS')
            if addr is None:
                continue
            found.append(ipaddress.ip_interface('%s/%d' % (addr, msg['prefixlen'])))
        return [str(i) for i in sorted(set(found), key=lambda i: (i.version, i.ip, i.network.prefixlen))]

    def default_route_interface(self):
        """The interface of the IPv4 default route (IPv6 when there is no IPv4 one), or None."""
        for family in (2, 10):   # AF_INET, AF_INET6
            best = None
            for route in self._call('listing routes', self.ipr.get_routes, family=family, table=254):
                if route['dst_len'] != 0 or route['type'] != 1:     # RTN_UNICAST default routes
                    continue
                oif = route.get_attr('RTA_OIF')
                if not oif:
                    hops = route.get_attr('RTA_MULTIPATH') or []
                    oif = hops[0]['oif'] if hops else None
                if not oif:
                    continue
                metric = route.get_attr('RTA_PRIORITY') or 0
                if best is None or metric < best[0]:
                    best = (metric, oif)
            if best is not None:
                found = self._call('reading link %s' % best[1], self.ipr.link, 'get', index=best[1])
                if found:
                    return found[0].get_attr('IFLA_IFNAME')
        return None

    # --- sysctls (per interface, in the namespace)
    def _sysctl_path(self, ifname, family=4):
        check_ifname(ifname)
        return '/proc/sys/net/ipv%d/conf/%s/forwarding' % (family, ifname)

    def get_forwarding(self, ifname, family=4):
        """The per-interface forwarding flag (0/1), or None when the interface has none."""
        path = self._sysctl_path(ifname, family)
        with in_netns(self.netns):
            try:
                handle = open(path)
            except (IOError, OSError):
                return None
        with handle:
            return int(handle.read().strip())

    def default_forwarding(self, family=4):
        """conf/default/forwarding: what a new interface (a new bridge) starts with."""
        with in_netns(self.netns):
            handle = open('/proc/sys/net/ipv%d/conf/default/forwarding' % family)
        with handle:
            return int(handle.read().strip())

    def set_forwarding(self, ifname, value, family=4):
        """Set the per-interface forwarding flag; returns True when it changed."""
        value = 1 if value else 0
        if self.get_forwarding(ifname, family) == value:
            return False
        path = self._sysctl_path(ifname, family)
        with in_netns(self.netns):
            try:
                handle = open(path, 'w')
            except (IOError, OSError) as exc:
                raise NetworkError("cannot write %s%s: %s" % (path, self._where(), exc))
        with handle:
            handle.write('%d\n' % value)
        return True

    # --- changing
    def create_bridge(self, name, mtu=None):
        check_ifname(name)
        self._call('creating bridge %s' % name, self.ipr.link, 'add', ifname=name, kind='bridge')
        if mtu:
            self.set_mtu(name, mtu)

    def ensure_bridge(self, name, mtu=None):
        """Create the bridge if missing and set it up; returns True when something changed."""
        changed = False
        link = self.link(name)
        if link is not None and link['kind'] != 'bridge':
            raise HostError("%s exists%s and is not a bridge (kind %s)" % (name, self._where(), link['kind']))
        if link is None:
            self.create_bridge(name, mtu)
            changed = True
        elif mtu and link['mtu'] != mtu:
            self.set_mtu(name, mtu)
            changed = True
        return self.set_up(name) or changed

    def set_mtu(self, name, mtu):
        index = self._index(name)
        self._call('setting the MTU of %s to %s' % (name, mtu), self.ipr.link, 'set', index=index, mtu=int(mtu))

    def set_up(self, name):
        """Bring the link up (admin state); returns True when it was down."""
        link = self.link(name)
        if link is None:
            raise HostError("no interface named %s%s" % (name, self._where()))
        if link['up']:
            return False
        self._call('setting %s up' % name, self.ipr.link, 'set', index=link['ifindex'], state='up')
        return True

    def set_master(self, name, bridge):
        index = self._index(name)
        master = self._index(bridge)
        self._call('attaching %s to %s' % (name, bridge), self.ipr.link, 'set', index=index, master=master)

    def add_address(self, name, cidr):
        iface = ipaddress.ip_interface(cidr)
        index = self._index(name)
        self._call('adding %s to %s' % (cidr, name), self.ipr.addr, 'add', index=index,
                   address=str(iface.ip), prefixlen=iface.network.prefixlen)

    def del_address(self, name, cidr):
        iface = ipaddress.ip_interface(cidr)
        index = self._index(name)
        self._call('removing %s from %s' % (cidr, name), self.ipr.addr, 'del', index=index,
                   address=str(iface.ip), prefixlen=iface.network.prefixlen)

    def delete_link(self, name):
        """Delete the link; returns False when it did not exist."""
        link = self.link(name)
        if link is None:
            return False
        try:
            self.ipr.link('del', index=link['ifindex'])
        except self._netlink_error as exc:
            if getattr(exc, 'code', None) in (errno.ENODEV, errno.ENOENT):
                return False
            raise NetworkError("deleting %s failed: %s" % (name, exc))
        return True

    def create_tap(self, name, multi_queue=False):
        """Create a persistent tap with the collection's flags (see :func:`tap_flags`)."""
        check_ifname(name)
        flags = tap_flags(multi_queue)
        with in_netns(self.netns):
            try:
                fd = os.open('/dev/net/tun', os.O_RDWR | os.O_CLOEXEC)
            except OSError as exc:
                raise HostError("cannot open /dev/net/tun to create tap %s: %s" % (name, exc.strerror))
        try:
            ifr = struct.pack('16sH22x', name.encode('utf-8'), flags)
            try:
                fcntl.ioctl(fd, TUNSETIFF, ifr)
                fcntl.ioctl(fd, TUNSETPERSIST, 1)
            except (IOError, OSError) as exc:
                raise NetworkError("creating tap %s failed: %s" % (name, exc))
        finally:
            os.close(fd)

    def ensure_tap(self, name, bridge, multi_queue=False, mtu=None):
        """Make ``name`` a persistent tap with the collection's flags, attached to ``bridge``
        and up. ``mtu`` None means the bridge's MTU. Recreates a tap with the wrong flags
        (unless a process holds it open), moves a tap attached elsewhere. Refuses to touch an
        interface of another kind. Returns True when something changed."""
        check_ifname(name, 'tap')
        check_ifname(bridge, 'bridge')
        br = self.link(bridge)
        if br is None or br['kind'] != 'bridge':
            raise HostError("bridge %s does not exist%s" % (bridge, self._where()))
        changed = False
        want = tap_flags(multi_queue) | IFF_PERSIST
        link = self.link(name)
        if link is not None and link['kind'] != 'tun':
            raise HostError("%s exists%s and is not a tap (kind %s); refusing to replace it"
                            % (name, self._where(), link['kind']))
        if link is not None and link['tun_flags'] != want:
            if link['carrier']:
                raise NetworkError("tap %s has flags 0x%x instead of 0x%x but a process holds it open; "
                                   "stop that VM first" % (name, link['tun_flags'], want))
            self.delete_link(name)
            link = None
        if link is None:
            self.create_tap(name, multi_queue)
            changed = True
            link = self.link(name)
        target_mtu = int(mtu) if mtu else br['mtu']
        if link['mtu'] != target_mtu:
            self.set_mtu(name, target_mtu)
            changed = True
        if link['master'] != bridge:
            self.set_master(name, bridge)
            changed = True
        return self.set_up(name) or changed
