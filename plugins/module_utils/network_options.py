# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ch_network's options: validated and normalized into the desired state (OptionError before any
change), and the address helpers the planner shares. No Ansible imports here."""

import ipaddress

from ansible_collections.cloudhv.ch.plugins.module_utils import dhcp
from ansible_collections.cloudhv.ch.plugins.module_utils import firewall as fw
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import OptionError
from ansible_collections.cloudhv.ch.plugins.module_utils.netlink import check_ifname, check_netns

LINK_LOCAL6 = ipaddress.ip_network('fe80::/10')
MIN_MTU = 68
MIN_MTU_IPV6 = 1280
MAX_MTU = 65535
PROTOS = ('tcp', 'udp', 'icmp')


# ---------------------------------------------------------------------------------------------
# desired state

def normalize_address(value, option='addresses'):
    """'10.77.0.1/24' -> '10.77.0.1/24'; IPv6 compressed; the prefix length is required."""
    if not isinstance(value, str) or '/' not in value:
        raise OptionError(option, "%r is not a CIDR address (address/prefix, e.g. 10.77.0.1/24)" % (value,))
    try:
        iface = ipaddress.ip_interface(value.strip())
    except ValueError as exc:
        raise OptionError(option, "%r is not a valid CIDR address: %s" % (value, exc))
    if iface.ip == iface.network.network_address and iface.network.prefixlen < iface.max_prefixlen - 1:
        raise OptionError(option, "%r is the network address of %s, not an address in it "
                          "(e.g. %s/%d)" % (value, iface.network, next(iface.network.hosts()), iface.network.prefixlen))
    return str(iface)


def normalize_network(value, option):
    if not isinstance(value, str) or not value.strip():
        raise OptionError(option, "%r is not a CIDR network (e.g. 10.0.0.0/8 or 2001:db8::/32)" % (value,))
    try:
        return str(ipaddress.ip_network(value.strip()))
    except ValueError as exc:
        raise OptionError(option, "%r is not a valid CIDR network: %s" % (value, exc))


def normalize_allow(entry, index):
    option = 'egress.allow[%d]' % index
    if not isinstance(entry, dict):
        raise OptionError(option, "must be a dict with dest, proto and ports")
    unknown = set(entry) - set(('dest', 'proto', 'ports'))
    if unknown:
        raise OptionError(option, "unknown keys %s (expected dest, proto, ports)" % ', '.join(sorted(unknown)))
    if entry.get('dest') is None:
        raise OptionError(option + '.dest', "is required (a CIDR network, e.g. 0.0.0.0/0 for any IPv4 destination)")
    dest = normalize_network(entry['dest'], option + '.dest')
    proto = entry.get('proto')
    if proto is not None and proto not in PROTOS:
        raise OptionError(option + '.proto', "%r is not one of %s" % (proto, ', '.join(PROTOS)))
    ports = entry.get('ports') or []
    if not isinstance(ports, list):
        raise OptionError(option + '.ports', "must be a list of port numbers or ranges (443, '8000-8100')")
    intervals = [_port_interval(port, option + '.ports') for port in ports]
    if intervals and proto not in ('tcp', 'udp'):
        raise OptionError(option + '.ports', "ports need proto tcp or udp (got %s)" % (proto or 'no proto',))
    return {'dest': dest, 'proto': proto, 'ports': fw.canonical_ports(intervals)}


def _port_number(text):
    text = text.strip()
    if not text.isdigit() or str(int(text)) != text or not 1 <= int(text) <= 65535:
        return None
    return int(text)


def _port_interval(port, option):
    """443, '443' or '8000-8100' -> (first, last)."""
    if isinstance(port, bool) or not isinstance(port, (int, str)):
        raise OptionError(option, "%r is not a port number (1-65535) or range ('8000-8100')" % (port,))
    text = str(port)
    first, sep, last = text.partition('-')
    first = _port_number(first)
    last = _port_number(last) if sep else first
    if first is None or last is None:
        raise OptionError(option, "%r is not a port number (1-65535) or range ('8000-8100')" % (port,))
    if last < first:
        raise OptionError(option, "range %r ends before it starts" % (port,))
    return first, last


def normalize_egress(egress):
    if egress is None:
        return None
    if not isinstance(egress, dict):
        raise OptionError('egress', "must be a dict with default and allow")
    default = egress.get('default') or 'accept'
    if default not in ('accept', 'drop'):
        raise OptionError('egress.default', "%r is not one of accept, drop" % (default,))
    allow = egress.get('allow') or []
    if not isinstance(allow, list):
        raise OptionError('egress.allow', "must be a list of {dest, proto, ports}")
    entries = [normalize_allow(entry, i) for i, entry in enumerate(allow)]
    if default == 'accept':
        # everything is allowed anyway: no rules, nothing to compare
        entries = []
    return {'default': default, 'allow': entries}


def desired_from_params(params):
    """Validate and normalize the module's options; raises OptionError, changes nothing."""
    name = check_ifname(params.get('name'), 'name')
    state = params.get('state') or 'present'
    if state not in ('present', 'absent'):
        raise OptionError('state', "%r is not one of present, absent" % (state,))
    netns = params.get('netns')
    if netns is not None:
        check_netns(netns)
    addresses = params.get('addresses')
    if addresses is not None:
        seen = []
        for value in addresses:
            norm = normalize_address(value)
            if norm not in seen:
                seen.append(norm)
        addresses = sort_addresses(seen)
    mtu = params.get('mtu')
    if mtu is not None:
        mtu = int(mtu)
        if not MIN_MTU <= mtu <= MAX_MTU:
            raise OptionError('mtu', "%d is out of range (%d-%d)" % (mtu, MIN_MTU, MAX_MTU))
        if mtu < MIN_MTU_IPV6 and any(':' in a for a in addresses or []):
            raise OptionError('mtu', "%d is below 1280, the minimum MTU of IPv6; the kernel would drop the "
                              "bridge's IPv6 addresses" % mtu)
    uplink = params.get('uplink')
    if uplink is not None:
        check_ifname(uplink, 'uplink')
        if uplink == name:
            raise OptionError('uplink', "the uplink cannot be the bridge itself")
    dhcp_settings = dhcp.normalize_dhcp(params.get('dhcp'))
    if dhcp_settings is not None and addresses is not None and state == 'present':
        # checked again in plan() against the addresses the bridge will have; here already, so that
        # bad input fails before the run even takes its lock
        dhcp.check_against_bridge(dhcp_settings, addresses, bool(params.get('nat')), name)
    return {
        'name': name,
        'state': state,
        'netns': netns,
        'addresses': addresses,
        'mtu': mtu,
        'nat': params.get('nat'),
        'uplink': uplink,
        'isolation': params.get('isolation'),
        'egress': normalize_egress(params.get('egress')),
        'dhcp': dhcp_settings,
        'prune_taps': bool(params.get('prune_taps')),
        'force': bool(params.get('force')),
    }


def sort_addresses(addresses):
    return [str(i) for i in sorted((ipaddress.ip_interface(a) for a in addresses),
                                   key=lambda i: (i.version, i.ip, i.network.prefixlen))]


def visible_addresses(actual, desired=None):
    """The bridge's addresses as reported and managed: IPv6 link-local ones only when listed."""
    listed = set(desired or [])
    return sort_addresses([a for a in actual
                           if a in listed or ipaddress.ip_interface(a).ip not in LINK_LOCAL6])


def subnets_of(addresses):
    found = []
    for address in sort_addresses(addresses):
        net = ipaddress.ip_interface(address).network
        if net.network_address in LINK_LOCAL6 or net.prefixlen == net.max_prefixlen:
            continue
        if str(net) not in found:
            found.append(str(net))
    return found
