#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
module: ch_network
short_description: Host networking for Cloud Hypervisor VMs (bridge, addresses, NAT, isolation, egress filtering)
version_added: 0.1.0
description:
  - Manages the host side of VM networking declaratively and idempotently, over netlink (pyroute2)
    and nftables (C(nft -j)).
  - A Linux bridge with its addresses (the VMs' gateway) and MTU; masquerading NAT out of an
    uplink, with IPv4 forwarding enabled for the bridge and the uplink only (the per-interface
    C(net.ipv4.conf.<if>.forwarding) flags, never the global switch); isolation of the VMs from
    unsolicited inbound connections; an egress allow-list for the VMs.
  - Firewall rules live in one nftables table of the collection's own, C(inet cloudhv), with per-bridge
    chains C(<bridge>-fwd) (filter, hook forward) and C(<bridge>-nat) (nat, hook postrouting). The
    module never reads or writes other tables, and rewrites a bridge's chains in one atomic nft
    transaction only when they differ from the desired rules.
  - Cleans up after crashes with O(prune_taps) (taps of VMs that no longer exist or are not running).
  - Options that are left out are not managed. For example O(nat) omitted keeps the bridge's NAT as it
    is, so a later task with only O(prune_taps=true) does not undo the NAT of an earlier one. O(dhcp) is the
    exception, without it no DHCP server runs on the bridge.
  - DHCP and DNS for the VMs with O(dhcp), one C(dnsmasq) per bridge.
author:
  - cloudhv.ch maintainers (@cloudhv)
options:
  name:
    description:
      - Name of the bridge, a Linux interface name of 1 to 15 characters without C(/), C(:) or whitespace.
    type: str
    required: true
  state:
    description:
      - V(present) creates or updates the bridge and its rules, V(absent) removes them.
      - V(absent) removes the bridge (with its addresses) and its chains, restores the uplink's forwarding
        flag when no other bridge of the collection uses that uplink for NAT, and leaves every other
        interface and nftables table untouched.
      - V(absent) refuses while a tap attached to the bridge belongs to a running VM or is held open by a
        process, unless O(force=true).
    type: str
    choices: [present, absent]
    default: present
  addresses:
    description:
      - Addresses of the bridge in CIDR notation (address and prefix length), IPv4 and IPv6, for example
        V(10.77.0.1/24) or V(fd00:77::1/64). They are the VMs' gateway.
      - Addresses not listed are removed, V([]) removes all. IPv6 link-local addresses (C(fe80::/10)) that
        the kernel assigns are never removed and are not reported unless listed.
      - When omitted, the bridge's addresses are not managed.
    type: list
    elements: str
  mtu:
    description:
      - MTU of the bridge (68 to 65535; at least 1280 with IPv6 addresses). When omitted, the MTU is not
        managed and a new bridge gets the kernel's default (1500).
    type: int
  nat:
    description:
      - V(true) masquerades traffic from the subnets of the bridge's addresses out of the O(uplink), and sets
        C(net.ipv4.conf.<bridge>.forwarding) and C(net.ipv4.conf.<uplink>.forwarding) to 1.
      - V(false) removes the NAT rules and restores both flags to what they were before NAT was enabled (the
        uplink's only when no other bridge of the collection still uses it).
      - When omitted, NAT is left as it is.
      - IPv6 subnets are masqueraded too, but Linux has no per-interface switch for IPv6 forwarding, so the
        module does not enable IPv6 forwarding; set C(net.ipv6.conf.all.forwarding) yourself if you need it.
    type: bool
  uplink:
    description:
      - The interface NATed traffic leaves by. Defaults to the interface of the default route (IPv4, else
        IPv6). It must exist.
    type: str
  isolation:
    description:
      - V(true) drops new connections from outside the bridge to its VMs (replies to connections the VMs
        opened, and related traffic, still pass). V(false) removes that rule. When omitted, left as it is.
    type: bool
  egress:
    description:
      - Egress filtering of traffic the VMs send through the host to other networks. When omitted, left as it is.
      - Traffic between VMs on the same bridge and traffic to the host itself (for example DNS or DHCP served
        on the bridge address) is not routed and not filtered.
    type: dict
    suboptions:
      default:
        description:
          - What happens to traffic that no O(egress.allow) entry matches. V(accept) removes the egress rules.
          - Replies to connections made to the VMs are always allowed.
        type: str
        choices: [accept, drop]
        default: accept
      allow:
        description:
          - Destinations the VMs may reach when O(egress.default=drop).
        type: list
        elements: dict
        default: []
        suboptions:
          dest:
            description:
              - Destination network in CIDR notation (V(0.0.0.0/0) for any IPv4 destination, V(::/0) for any IPv6
                one). Host bits must be zero.
            type: str
            required: true
          proto:
            description:
              - Protocol. Omitted means any protocol (then O(egress.allow[].ports) must be empty).
              - V(icmp) means ICMPv6 for an IPv6 O(egress.allow[].dest).
            type: str
            choices: [tcp, udp, icmp]
          ports:
            description:
              - Destination ports (with O(egress.allow[].proto=tcp) or O(egress.allow[].proto=udp)). Empty means all ports.
              - Each is a port number (V(443)) or an inclusive range (V(8000-8100)). Overlapping and adjacent
                entries are merged, so RV(network.egress) may list them differently from the task.
            type: list
            elements: raw
            default: []
  dhcp:
    description:
      - DHCP and DNS for the VMs on the bridge, served by one C(dnsmasq) per bridge (from Debian's C(dnsmasq-base),
        no system service). It binds to this bridge only, ignores C(/etc/dnsmasq.conf), keeps running after the
        Ansible run, and is restarted only when its configuration changes. A dead server is reported and started
        again.
      - Each NIC of a VM on the bridge gets a static lease for its MAC with the VM's name as host name, at
        C(networks[].address) of M(cloudhv.ch.ch_vm) when set, else a dynamic lease from O(dhcp.ranges). Those
        entries are files dnsmasq re-reads without a restart; M(cloudhv.ch.ch_vm) writes and removes them, and
        every ch_network run rebuilds them from the VMs' records.
      - When the bridge has an IPv6 /64, dnsmasq also sends router advertisements for SLAAC.
      - Unlike the other options, leaving O(dhcp) out does not keep what is there; without O(dhcp) no server runs,
        so removing it from a task stops the server and removes its files (leases included). O(state=absent) does the same.
      - With O(isolation) or O(egress), DHCP and DNS still reach the server, because they are traffic to the host
        itself, which the collection's forward chains do not filter.
      - Files are C(<run_dir>/dhcp/<bridge>/) (configuration, pid file, VMs' hosts files) and
        C(<state_dir>/dhcp/<bridge>.leases) and C(.log), so leases survive a restart. Bridges that share a
        O(run_dir) need distinct names, also across network namespaces.
    type: dict
    suboptions:
      ranges:
        description:
          - IPv4 ranges C(start-end) dynamic leases come from, for example V(10.77.0.100-10.77.0.199). Each lies inside
            the subnet of one of the bridge's IPv4 addresses and does not contain the bridge's own address.
          - V([]) gives static leases only (to the NICs with an address).
        type: list
        elements: str
        default: []
      lease_time:
        description:
          - Lease time, in seconds or with a unit (V(30m), V(12h), V(7d), V(1w)), or V(infinite). At least two minutes.
        type: str
        default: 1h
      dns:
        description:
          - Answer DNS on the bridge's addresses with the VMs' names (their static addresses and the host names of
            their leases), and forward every other query to the resolvers of the host (its C(/etc/resolv.conf)).
          - V(false) turns DNS off in the server.
        type: bool
        default: true
      domain:
        description:
          - DNS domain of the VMs. Without it, VMs answer to their bare names; with it, to C(<vm>.<domain>) (and their
            bare names). Queries in the domain are never forwarded.
        type: str
      router:
        description:
          - The default gateway handed to clients. Defaults to the bridge's (first) IPv4 address when O(nat) is on,
            and to none otherwise.
        type: str
      dns_servers:
        description:
          - DNS servers handed to clients instead of the bridge's own address.
        type: list
        elements: str
        default: []
  prune_taps:
    description:
      - Remove the collection's taps (named C(chv) and 12 hex digits) that belong to no VM recorded in
        O(state_dir), and those attached to this bridge whose VM is not running. Other interfaces are never
        touched, and a tap that a process holds open is never removed.
      - The removed taps are returned in RV(network.pruned).
    type: bool
    default: false
  force:
    description:
      - With O(state=absent), remove the bridge even while running VMs' taps are attached to it (those VMs lose
        their network).
    type: bool
    default: false
  netns:
    description:
      - Work inside this named network namespace (C(/run/netns/<netns>), as created by C(ip netns add)), for
        multi-tenant hosts and for tests. It must exist.
    type: str
extends_documentation_fragment:
  - cloudhv.ch.common
  - cloudhv.ch.common.action_group
  - cloudhv.ch.common.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
  platform:
    platforms: linux
requirements:
  - pyroute2 (Python library) on the target
  - nft (nftables command-line tool) on the target, for O(nat), O(isolation) and O(egress)
  - ip (iproute2) on the target when O(netns) is set
  - dnsmasq on the target for O(dhcp) (Debian package C(dnsmasq-base); the C(cloudhv.ch.install) role installs it)
notes:
  - Runs as root (CAP_NET_ADMIN).
  - One ch_network run at a time per host holds C(<run_dir>/.network.lock).
  - The accept verdicts of the collection's chains end only its own chains; a drop in another nftables table
    (or iptables) still applies, so the module can restrict traffic but never opens what other rules drop.
  - O(binary) and O(api_timeout) are accepted for use with C(module_defaults) but not used by this module.
seealso:
  - module: cloudhv.ch.ch_vm
  - name: nftables wiki
    description: The JSON interface used by this module.
    link: https://wiki.nftables.org/wiki-nftables/index.php/JSON_API
'''

EXAMPLES = r'''
- name: A NATed bridge for a lab host (VMs reach the outside through the default route's interface)
  cloudhv.ch.ch_network:
    name: chbr0
    addresses:
      - 10.77.0.1/24
      - fd00:77::1/64
    nat: true

- name: An isolated bridge whose VMs may only reach an internal mirror and DNS
  cloudhv.ch.ch_network:
    name: chbr-sec
    addresses: [10.78.0.1/24]
    mtu: 1450
    nat: true
    uplink: eth1
    isolation: true
    egress:
      default: drop
      allow:
        - dest: 10.20.0.0/16
          proto: tcp
          ports: [80, 443]
        - dest: 0.0.0.0/0
          proto: udp
          ports: [53]
        - dest: 0.0.0.0/0
          proto: icmp

- name: A NATed bridge whose VMs get their addresses and names from DHCP (web1.lab.internal resolves)
  cloudhv.ch.ch_network:
    name: chbr1
    addresses: [10.79.0.1/24, fd00:79::1/64]
    nat: true
    dhcp:
      ranges: [10.79.0.100-10.79.0.199]
      lease_time: 12h
      domain: lab.internal

- name: Clean up taps left behind by crashed or deleted VMs
  cloudhv.ch.ch_network:
    name: chbr0
    prune_taps: true
  register: cleanup

- name: Show what was removed
  ansible.builtin.debug:
    var: cleanup.network.pruned

- name: Remove the bridge, its addresses and its rules
  cloudhv.ch.ch_network:
    name: chbr-sec
    state: absent
'''

RETURN = r'''
network:
  description: The bridge as it is after the run (in check mode, as it would be).
  returned: always
  type: dict
  contains:
    name:
      description: Name of the bridge.
      type: str
      returned: always
      sample: chbr0
    state:
      description: V(present) or V(absent).
      type: str
      returned: always
      sample: present
    addresses:
      description: Addresses of the bridge in CIDR notation (kernel-assigned IPv6 link-local ones left out).
      type: list
      elements: str
      returned: always
      sample: [10.77.0.1/24, fd00:77::1/64]
    mtu:
      description: MTU of the bridge, V(null) when absent.
      type: int
      returned: always
      sample: 1500
    ifindex:
      description: Interface index of the bridge, V(null) when absent (or not created yet in check mode).
      type: int
      returned: always
      sample: 7
    taps:
      description: Tap devices attached to the bridge.
      type: list
      elements: str
      returned: always
      sample: [chv3f2a9c01b7de]
    nat:
      description: Whether traffic from the bridge's subnets is masqueraded out of RV(network.uplink).
      type: bool
      returned: always
      sample: true
    uplink:
      description: The NAT uplink, V(null) without NAT.
      type: str
      returned: always
      sample: eth0
    isolation:
      description: Whether new inbound connections to the VMs are dropped.
      type: bool
      returned: always
      sample: false
    egress:
      description: The egress filter; O(egress.default=accept) with no entries means unfiltered.
      type: dict
      returned: always
      sample: {default: drop, allow: [{dest: 10.20.0.0/16, proto: tcp, ports: [80, 443]}]}
    dhcp:
      description:
        - The bridge's DHCP server, V(null) without one. Its settings (O(dhcp) with the defaults filled in), whether it
          runs, its pid and the current leases read from its lease file.
      type: dict
      returned: always
      sample:
        ranges: [10.79.0.100-10.79.0.199]
        lease_time: 12h
        dns: true
        domain: lab.internal
        router: 10.79.0.1
        dns_servers: []
        running: true
        pid: 4242
        leases: [{mac: "02:5e:11:0a:3c:01", ip: 10.79.0.10, hostname: web1, expiry: 1764892800}]
      contains:
        pid:
          description: Process id of the dnsmasq, V(null) when it does not run (in check mode, when it would be started).
          type: int
        running:
          description: Whether the server runs (after the run).
          type: bool
        leases:
          description:
            - The IPv4 leases in the lease file, with C(mac), C(ip), C(hostname) (V(null) when the client gave none)
              and C(expiry) (seconds since the epoch, 0 for an infinite lease).
          type: list
          elements: dict
    pruned:
      description: Taps removed by O(prune_taps) (in check mode, that would be removed).
      type: list
      elements: str
      returned: always
      sample: [chv0d5e2f4a9b61]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cloudhv.ch.plugins.module_utils.common import common_argument_spec, run_module
from ansible_collections.cloudhv.ch.plugins.module_utils.firewall import Nft
from ansible_collections.cloudhv.ch.plugins.module_utils.netlink import Netlink
from ansible_collections.cloudhv.ch.plugins.module_utils.network import NetworkManager
from ansible_collections.cloudhv.ch.plugins.module_utils.network_options import desired_from_params
from ansible_collections.cloudhv.ch.plugins.module_utils.store import Layout


def action(module):
    params = module.params
    desired = desired_from_params(params)
    with Netlink(netns=desired['netns']) as nl:
        manager = NetworkManager(nl, Nft(netns=desired['netns']), Layout(params['state_dir'], params['run_dir']))
        result = manager.run(desired, check_mode=module.check_mode)
    if not module._diff:
        result.pop('diff', None)
    return result


def main():
    module = AnsibleModule(
        argument_spec=common_argument_spec(
            name=dict(type='str', required=True),
            state=dict(type='str', choices=['present', 'absent'], default='present'),
            addresses=dict(type='list', elements='str'),
            mtu=dict(type='int'),
            nat=dict(type='bool'),
            uplink=dict(type='str'),
            isolation=dict(type='bool'),
            egress=dict(type='dict', options=dict(
                default=dict(type='str', choices=['accept', 'drop'], default='accept'),
                allow=dict(type='list', elements='dict', default=[], options=dict(
                    dest=dict(type='str', required=True),
                    proto=dict(type='str', choices=['tcp', 'udp', 'icmp']),
                    ports=dict(type='list', elements='raw', default=[]),
                )),
            )),
            dhcp=dict(type='dict', options=dict(
                ranges=dict(type='list', elements='str', default=[]),
                lease_time=dict(type='str', default='1h'),
                dns=dict(type='bool', default=True),
                domain=dict(type='str'),
                router=dict(type='str'),
                dns_servers=dict(type='list', elements='str', default=[]),
            )),
            prune_taps=dict(type='bool', default=False),
            force=dict(type='bool', default=False),
            netns=dict(type='str'),
        ),
        supports_check_mode=True,
    )
    run_module(module, action)


if __name__ == '__main__':
    main()
