# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""nftables through ``nft -j`` (JSON in and out): one table of our own, per-bridge chains.

Everything lives in table ``inet cloudhv``; a bridge ``B`` owns at most two base chains:

* ``B-fwd`` (type filter, hook forward, priority 0, policy accept): isolation and egress.
  Egress rules match ``iifname B oifname != B`` (VM -> elsewhere), isolation rules match
  ``oifname B iifname != B`` (elsewhere -> VM). Traffic between VMs on the same bridge is
  bridged, not routed, and never reaches these chains; neither does traffic to the host itself.
* ``B-nat`` (type nat, hook postrouting, priority 100): one ``masquerade`` rule per subnet of
  the bridge's addresses out of the uplink, and a counting marker rule whose comment records
  the NAT settings (the uplink, and the forwarding flags of the uplink and the bridge before
  NAT was enabled, so that they can be restored). The record lives and dies with the ruleset:
  after a reboot neither the rules nor the flags remain.

Every rule carries a ``cloudhv ...`` comment naming its role; :func:`decode_bridge` reads the
settings back from the rules, :func:`bridge_chains` turns settings into rules, and
:func:`transaction` compares the desired chains with ``nft -j list table inet cloudhv`` and
returns the commands of one atomic ``nft -j -f -`` transaction that rewrites only the chains
that differ (nothing when they are equal). Accept verdicts in our chains only end our chains;
drops are final, so the module can restrict traffic but never opens what another table drops.
Other tables are never read or written.

The pure functions need no nft; :class:`Nft` runs the binary (``ip netns exec NS nft`` when a
namespace is given). No Ansible imports here.
"""


import ipaddress
import json
import os
import subprocess

from ansible_collections.cloudhv.ch.plugins.module_utils.errors import (
    MissingDependency,
    NetworkError,
)

FAMILY = 'inet'
TABLE = 'cloudhv'
FWD_SUFFIX = '-fwd'
NAT_SUFFIX = '-nat'
FWD_PROPS = {'type': 'filter', 'hook': 'forward', 'prio': 0, 'policy': 'accept'}
NAT_PROPS = {'type': 'nat', 'hook': 'postrouting', 'prio': 100, 'policy': 'accept'}

C_EGRESS_EST = 'cloudhv egress established'
C_EGRESS_ALLOW = 'cloudhv egress allow'
C_EGRESS_DROP = 'cloudhv egress drop'
C_ISO_EST = 'cloudhv isolation established'
C_ISO_DROP = 'cloudhv isolation drop'
C_NAT = 'cloudhv nat masquerade'
C_NAT_MARK = 'cloudhv nat'

SBIN_DIRS = ('/usr/sbin', '/sbin', '/usr/local/sbin', '/usr/bin', '/bin')
NFT_TIMEOUT = 30


def chain_names(bridge):
    """(forward chain, nat chain) of a bridge."""
    return bridge + FWD_SUFFIX, bridge + NAT_SUFFIX


# ---------------------------------------------------------------------------------------------
# encoding: settings -> rules

def _meta(key, value, op='=='):
    return {'match': {'op': op, 'left': {'meta': {'key': key}}, 'right': value}}


def _ct_established():
    return {'match': {'op': 'in', 'left': {'ct': {'key': 'state'}}, 'right': ['established', 'related']}}


def _addr(network):
    """nft's JSON form of a network: a plain address for a host, else a prefix."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return {'prefix': {'addr': str(network.network_address), 'len': network.prefixlen}}


def _payload(protocol, field, right):
    return {'match': {'op': '==', 'left': {'payload': {'protocol': protocol, 'field': field}}, 'right': right}}


def _rule(comment, *expr):
    return {'comment': comment, 'expr': list(expr)}


def canonical_ports(intervals):
    """Port intervals [(first, last)] -> the canonical sorted list of an allow entry: overlapping
    and adjacent intervals merged (nft merges them in an interval set too), single ports as ints,
    ranges as 'first-last' strings."""
    merged = []
    for first, last in sorted(intervals):
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return [first if first == last else '%d-%d' % (first, last) for first, last in merged]


def _parse_port(port):
    """A canonical port entry (443 or '8000-8100') -> (first, last)."""
    if isinstance(port, str) and '-' in port:
        first, last = port.split('-', 1)
        return int(first), int(last)
    return int(port), int(port)


def _nft_port(port):
    first, last = _parse_port(port)
    return first if first == last else {'range': [first, last]}


def _decode_ports(right):
    items = right['set'] if isinstance(right, dict) and 'set' in right else [right]
    intervals = []
    for item in items:
        if isinstance(item, dict):
            first, last = item['range']
            intervals.append((int(first), int(last)))
        else:
            intervals.append((int(item), int(item)))
    return canonical_ports(intervals)


def allow_rule(bridge, entry):
    """The accept rule of one normalized egress allow entry {dest, proto, ports}."""
    dest = ipaddress.ip_network(entry['dest'])
    fam = 'ip' if dest.version == 4 else 'ip6'
    expr = [_meta('iifname', bridge), _meta('oifname', bridge, '!='), _payload(fam, 'daddr', _addr(dest))]
    proto = entry.get('proto')
    ports = list(entry.get('ports') or [])
    if proto in ('tcp', 'udp') and ports:
        nft_ports = [_nft_port(p) for p in ports]
        expr.append(_payload(proto, 'dport', nft_ports[0] if len(nft_ports) == 1 else {'set': nft_ports}))
    elif proto in ('tcp', 'udp'):
        expr.append(_meta('l4proto', proto))
    elif proto == 'icmp':
        expr.append(_meta('l4proto', 'icmp' if dest.version == 4 else 'ipv6-icmp'))
    expr.append({'accept': None})
    return _rule(C_EGRESS_ALLOW, *expr)


def forward_rules(bridge, isolation, egress):
    rules = []
    egress = egress or {}
    if egress.get('default') == 'drop':
        out = (_meta('iifname', bridge), _meta('oifname', bridge, '!='))
        rules.append(_rule(C_EGRESS_EST, out[0], out[1], _ct_established(), {'accept': None}))
        for entry in egress.get('allow') or []:
            rules.append(allow_rule(bridge, entry))
        rules.append(_rule(C_EGRESS_DROP, out[0], out[1], {'drop': None}))
    if isolation:
        inb = (_meta('oifname', bridge), _meta('iifname', bridge, '!='))
        rules.append(_rule(C_ISO_EST, inb[0], inb[1], _ct_established(), {'accept': None}))
        rules.append(_rule(C_ISO_DROP, inb[0], inb[1], {'drop': None}))
    return rules


def nat_marker(bridge, uplink, uplink_forwarding, bridge_forwarding):
    return '%s bridge=%s uplink=%s uplink_forwarding=%s bridge_forwarding=%s' % (
        C_NAT_MARK, bridge, uplink, _flag(uplink_forwarding), _flag(bridge_forwarding))


def _flag(value):
    return '-' if value is None else str(int(value))


def nat_rules(bridge, uplink, subnets, uplink_forwarding, bridge_forwarding):
    rules = [_rule(nat_marker(bridge, uplink, uplink_forwarding, bridge_forwarding),
                   _meta('iifname', bridge), _meta('oifname', uplink), {'counter': None})]
    for subnet in subnets:
        net = ipaddress.ip_network(subnet)
        rules.append(_rule(C_NAT, _payload('ip' if net.version == 4 else 'ip6', 'saddr', _addr(net)),
                           _meta('oifname', uplink), {'masquerade': None}))
    return rules


def bridge_chains(bridge, settings):
    """The chains a bridge needs for ``settings``: {chain name: {'props': ..., 'rules': [...]}}.

    settings: nat (bool), uplink, subnets (list of networks), uplink_forwarding and
    bridge_forwarding (the flags before NAT), isolation (bool), egress ({default, allow}).
    """
    fwd, nat = chain_names(bridge)
    chains = {}
    rules = forward_rules(bridge, settings.get('isolation'), settings.get('egress'))
    if rules:
        chains[fwd] = {'props': dict(FWD_PROPS), 'rules': rules}
    if settings.get('nat'):
        chains[nat] = {'props': dict(NAT_PROPS),
                       'rules': nat_rules(bridge, settings['uplink'], settings.get('subnets') or [],
                                          settings.get('uplink_forwarding'), settings.get('bridge_forwarding'))}
    return canon_chains(chains)


# ---------------------------------------------------------------------------------------------
# canonical form and comparison

def _canon(value, key=None):
    if isinstance(value, dict):
        if 'counter' in value and len(value) == 1:
            return {'counter': None}     # counters differ by their values only
        return dict((k, _canon(v, k)) for k, v in value.items())
    if isinstance(value, list):
        items = [_canon(v) for v in value]
        if key in ('set', 'right') and all(not isinstance(i, (dict, list)) for i in items):
            items = sorted(items, key=lambda i: (str(type(i)), i))
        return items
    return value


def canon_rule(rule):
    return {'comment': rule.get('comment'), 'expr': _canon(rule.get('expr') or [])}


def canon_chains(chains):
    return dict((name, {'props': dict((k, chain['props'].get(k)) for k in ('type', 'hook', 'prio', 'policy')),
                        'rules': [canon_rule(r) for r in chain['rules']]})
                for name, chain in chains.items())


def parse_listing(listing):
    """``nft -j list table inet cloudhv`` output -> {chain: {'props', 'rules'}} (canonical)."""
    chains = {}
    rules = []
    for item in (listing or {}).get('nftables', []):
        if 'chain' in item:
            chain = item['chain']
            chains[chain['name']] = {'props': chain, 'rules': []}
        elif 'rule' in item:
            rules.append(item['rule'])
    for rule in rules:
        if rule.get('chain') in chains:
            chains[rule['chain']]['rules'].append(rule)
    return canon_chains(chains)


def bridge_part(chains, bridge):
    """The chains of ``chains`` (a parsed table) that belong to ``bridge``."""
    names = chain_names(bridge)
    return dict((n, c) for n, c in (chains or {}).items() if n in names)


# ---------------------------------------------------------------------------------------------
# decoding: rules -> settings

def _parse_marker(comment):
    words = comment.split()
    if words[:2] != ['cloudhv', 'nat'] or len(words) < 3:
        return None
    values = {}
    for word in words[2:]:
        key, _sep, value = word.partition('=')
        values[key] = value
    for key in ('uplink_forwarding', 'bridge_forwarding'):
        if key in values:
            values[key] = None if values[key] in ('', '-') else int(values[key])
    return values


def _decode_network(right):
    if isinstance(right, dict) and 'prefix' in right:
        return ipaddress.ip_network('%s/%s' % (right['prefix']['addr'], right['prefix']['len']), strict=False)
    if isinstance(right, str):
        return ipaddress.ip_network(right)
    return None


def decode_allow(expr):
    """The allow entry an egress accept rule encodes, or None when it is not one of ours."""
    entry = {'dest': None, 'proto': None, 'ports': []}
    try:
        for item in expr:
            if 'accept' in item:
                continue
            match = item.get('match') or {}
            left = match.get('left') or {}
            if 'meta' in left and left['meta'].get('key') in ('iifname', 'oifname'):
                continue
            if 'meta' in left and left['meta'].get('key') == 'l4proto':
                entry['proto'] = {'ipv6-icmp': 'icmp'}.get(match['right'], match['right'])
                continue
            payload = left.get('payload') or {}
            if payload.get('field') == 'daddr' and payload.get('protocol') in ('ip', 'ip6'):
                entry['dest'] = str(_decode_network(match['right']))
            elif payload.get('field') == 'dport' and payload.get('protocol') in ('tcp', 'udp'):
                entry['proto'] = payload['protocol']
                entry['ports'] = _decode_ports(match['right'])
            else:
                return None
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if entry['dest'] is None or entry['proto'] not in (None, 'tcp', 'udp', 'icmp'):
        return None
    return entry


def decode_bridge(chains, bridge):
    """What our rules for ``bridge`` currently implement: a settings dict (see bridge_chains)."""
    fwd, nat = chain_names(bridge)
    settings = {'nat': False, 'uplink': None, 'subnets': [], 'uplink_forwarding': None,
                'bridge_forwarding': None, 'isolation': False,
                'egress': {'default': 'accept', 'allow': []}}
    for rule in (chains.get(fwd) or {}).get('rules', []):
        comment = rule.get('comment')
        if comment == C_ISO_DROP:
            settings['isolation'] = True
        elif comment == C_EGRESS_DROP:
            settings['egress']['default'] = 'drop'
        elif comment == C_EGRESS_ALLOW:
            entry = decode_allow(rule['expr'])
            if entry is not None:
                settings['egress']['allow'].append(entry)
    if settings['egress']['default'] != 'drop':
        settings['egress']['allow'] = []
    for rule in (chains.get(nat) or {}).get('rules', []):
        marker = _parse_marker(rule.get('comment') or '')
        if marker is not None and marker.get('bridge') == bridge:
            settings['nat'] = True
            settings['uplink'] = marker.get('uplink') or None
            settings['uplink_forwarding'] = marker.get('uplink_forwarding')
            settings['bridge_forwarding'] = marker.get('bridge_forwarding')
        elif rule.get('comment') == C_NAT:
            for item in rule['expr']:
                left = (item.get('match') or {}).get('left') or {}
                if (left.get('payload') or {}).get('field') == 'saddr':
                    settings['subnets'].append(str(_decode_network(item['match']['right'])))
    return settings


def nat_uplinks(chains, exclude_bridge=None):
    """{uplink: its forwarding flag before NAT} for every NATed bridge but ``exclude_bridge``."""
    found = {}
    for name, chain in sorted((chains or {}).items()):
        if not name.endswith(NAT_SUFFIX):
            continue
        for rule in chain['rules']:
            marker = _parse_marker(rule.get('comment') or '')
            if marker is None or marker.get('bridge') == exclude_bridge or not marker.get('uplink'):
                continue
            if name != marker.get('bridge', '') + NAT_SUFFIX:
                continue
            found.setdefault(marker['uplink'], marker.get('uplink_forwarding'))
    return found


# ---------------------------------------------------------------------------------------------
# the transaction

def _chain_ref(name):
    return {'family': FAMILY, 'table': TABLE, 'name': name}


def transaction(bridge, table_chains, desired):
    """Commands of one nft transaction that makes ``bridge``'s chains equal ``desired``.

    table_chains: the parsed table (None when the table does not exist); desired: from
    bridge_chains. Returns [] when nothing differs. Chains of other bridges are never named;
    the table is created when needed and deleted when it would be left empty.
    """
    current = bridge_part(table_chains, bridge)
    if current == desired:
        return []
    cmds = []
    if desired:
        cmds.append({'add': {'table': {'family': FAMILY, 'name': TABLE}}})
    for name in chain_names(bridge):
        cur, want = current.get(name), desired.get(name)
        if cur == want:
            continue
        replace = cur is not None and (want is None or cur['props'] != want['props'])
        if replace:
            cmds.append({'flush': {'chain': _chain_ref(name)}})
            cmds.append({'delete': {'chain': _chain_ref(name)}})
        if want is None:
            continue
        if cur is None or replace:
            chain = _chain_ref(name)
            chain.update(want['props'])
            cmds.append({'add': {'chain': chain}})
        else:
            cmds.append({'flush': {'chain': _chain_ref(name)}})
        for rule in want['rules']:
            body = {'family': FAMILY, 'table': TABLE, 'chain': name, 'expr': rule['expr']}
            if rule.get('comment'):
                body['comment'] = rule['comment']
            cmds.append({'add': {'rule': body}})
    remaining = (set(table_chains or {}) - set(current)) | set(desired)
    if table_chains is not None and not remaining:
        cmds.append({'delete': {'table': {'family': FAMILY, 'name': TABLE}}})
    return cmds


# ---------------------------------------------------------------------------------------------
# running nft

def find_binary(name, extra_dirs=SBIN_DIRS):
    dirs = os.environ.get('PATH', '').split(os.pathsep) + list(extra_dirs)
    for directory in dirs:
        if not directory:
            continue
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


class Nft:
    """``nft -j`` in the host's or a named network namespace's ruleset."""

    def __init__(self, netns=None, binary=None, timeout=NFT_TIMEOUT):
        self.netns = netns
        self.binary = binary
        self.timeout = timeout

    def available(self):
        try:
            self._argv([])
        except MissingDependency:
            return False
        return True

    def _argv(self, args):
        nft = self.binary if self.binary else find_binary('nft')
        if not nft or not (os.path.isfile(nft) and os.access(nft, os.X_OK)):
            raise MissingDependency('nft', reason='(the nftables command-line tool, package nftables) '
                                    'to manage NAT, isolation and egress rules')
        argv = [nft] + list(args)
        if self.netns:
            ip = find_binary('ip')
            if not ip:
                raise MissingDependency('ip', reason='(iproute2) to run nft inside network namespace %s' % self.netns)
            argv = [ip, 'netns', 'exec', self.netns] + argv
        return argv

    def _run(self, args, stdin=None):
        argv = self._argv(args)
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=self.timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise NetworkError("%s did not finish within %d s" % (' '.join(argv), self.timeout))
        return proc

    def list_table(self):
        """Our table parsed ({chain: {'props', 'rules'}}), or None when it does not exist."""
        proc = self._run(['-j', 'list', 'table', FAMILY, TABLE])
        if proc.returncode != 0:
            if 'No such file or directory' in proc.stderr:
                return None
            raise NetworkError("nft list table %s %s failed: %s" % (FAMILY, TABLE, proc.stderr.strip()))
        try:
            listing = json.loads(proc.stdout)
        except ValueError as exc:
            raise NetworkError("nft returned invalid JSON: %s" % exc)
        return parse_listing(listing)

    def apply(self, commands):
        """Run the commands as one atomic transaction (``nft -j -f -``)."""
        if not commands:
            return
        proc = self._run(['-j', '-f', '-'], stdin=json.dumps({'nftables': commands}))
        if proc.returncode != 0:
            raise NetworkError("the nftables transaction failed (nothing was changed): %s" % proc.stderr.strip(),
                               nft_commands=commands)
