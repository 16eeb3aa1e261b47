# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ch_network's engine: desired state from options, actual state from netlink and nftables,
the plan between them, and its execution.

* network_options.desired_from_params validates and normalizes every option (OptionError
  before any change);
* :meth:`NetworkManager.gather` reads the host (netlink, our nft table, VM records);
* :func:`plan` is pure: (desired, actual) -> ordered steps, before/after for the diff and the
  predicted result, so check mode predicts exactly what a run does;
* :meth:`NetworkManager.run` executes the steps (unless in check mode) and reads the result back.

Options left out (``None``) are not managed: ``addresses``, ``mtu``, ``nat``, ``isolation`` and
``egress`` keep what the bridge has. IPv6 link-local addresses (fe80::/10) that the kernel
assigns are never removed and not reported unless listed.

Ordering guarantees: firewall rules are installed before forwarding is enabled and forwarding
is restored before rules are removed, so VM traffic is never forwarded unfiltered.
No Ansible imports here.
"""


import errno
import fcntl
import os
import time

from ansible_collections.cloudhv.ch.plugins.module_utils import dhcp
from ansible_collections.cloudhv.ch.plugins.module_utils import firewall as fw
from ansible_collections.cloudhv.ch.plugins.module_utils import vm_record
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import (
    BusyError,
    HostError,
    OptionError,
)
from ansible_collections.cloudhv.ch.plugins.module_utils.netlink import (
    in_netns,
    is_collection_tap,
)
from ansible_collections.cloudhv.ch.plugins.module_utils.network_options import subnets_of, visible_addresses
from ansible_collections.cloudhv.ch.plugins.module_utils.store import ensure_dir

DEFAULT_BRIDGE_MTU = 1500
LOCK_NAME = '.network.lock'
LOCK_TIMEOUT = 60.0


# ---------------------------------------------------------------------------------------------
# taps

def prune_candidates(bridge, taps, owners, running):
    """Collection taps to remove: those of no recorded VM, and those attached to ``bridge``
    whose VM is not running. A tap some process holds open (carrier on) is never removed.

    taps: link dicts of the namespace's collection taps; owners: {tap: vm name};
    running: {vm name: bool}.
    """
    found = []
    for tap in sorted(taps, key=lambda t: t['name']):
        if not is_collection_tap(tap['name']) or tap.get('kind') != 'tun' or tap.get('carrier'):
            continue
        owner = owners.get(tap['name'])
        if owner is None or (tap.get('master') == bridge and not running.get(owner)):
            found.append(tap['name'])
    return found


def in_use(bridge, ports, owners, running):
    """[(tap, vm or None)] of the bridge's taps that a running VM owns or a process holds open."""
    busy = []
    for port in ports:
        if port.get('kind') != 'tun':
            continue
        owner = owners.get(port['name'])
        if (owner is not None and running.get(owner)) or port.get('carrier'):
            busy.append((port['name'], owner))
    return busy


# ---------------------------------------------------------------------------------------------
# the plan

DHCP_VIEW_KEYS = ('ranges', 'lease_time', 'dns', 'domain', 'router', 'dns_servers')


def dhcp_view(settings, running):
    """The DHCP server as the diff shows it: its settings and whether it runs (None: no server)."""
    if not settings:
        return None
    view = dict((key, settings.get(key)) for key in DHCP_VIEW_KEYS)
    view['running'] = bool(running)
    return view


def _view(state, addresses, mtu, fw_settings, taps, dhcp_settings=None, dhcp_running=False):
    nat = bool(fw_settings.get('nat'))
    return {
        'state': state,
        'addresses': list(addresses),
        'mtu': mtu,
        'nat': nat,
        'uplink': fw_settings.get('uplink') if nat else None,
        'isolation': bool(fw_settings.get('isolation')),
        'egress': fw_settings.get('egress') or {'default': 'accept', 'allow': []},
        'taps': sorted(taps),
        'dhcp': dhcp_view(dhcp_settings, dhcp_running),
    }


def view_of(desired, actual):
    """What the host has now, as the result and the diff show it."""
    link = actual.get('link')
    if link is not None and link.get('kind') != 'bridge':
        link = None
    return _view('present' if link else 'absent',
                 visible_addresses(actual.get('addresses') or [], desired['addresses']) if link else [],
                 link['mtu'] if link else None, actual['fw'],
                 [p['name'] for p in actual.get('ports') or [] if p.get('kind') == 'tun'],
                 (actual.get('dhcp') or {}).get('settings'), (actual.get('dhcp') or {}).get('pid') is not None)


def _resolve_uplink(desired, actual, nat_before):
    if desired['uplink']:
        uplink = desired['uplink']
    elif actual.get('default_uplink') and actual['default_uplink'] != desired['name']:
        uplink = actual['default_uplink']
    elif nat_before and actual['fw'].get('uplink'):
        uplink = actual['fw']['uplink']
    else:
        raise OptionError('uplink', "NAT needs an uplink and there is no default route%s; set uplink"
                          % _where(desired))
    if uplink not in actual['link_names']:
        raise OptionError('uplink', "no interface named %r%s" % (uplink, _where(desired)))
    if uplink == desired['name']:
        raise OptionError('uplink', "the uplink cannot be the bridge itself")
    return uplink


def _where(desired):
    return " in network namespace %s" % desired['netns'] if desired.get('netns') else ""


def plan(desired, actual):
    """Ordered steps from ``actual`` to ``desired``, with before/after views.

    actual (see NetworkManager.gather): link (bridge link dict or None), addresses, ports
    (link dicts), link_names, default_uplink, forwarding ({ifname: flag}), default_forwarding,
    table (parsed nft table or None), fw (decoded settings of this bridge), other_uplinks,
    taps (the namespace's collection taps), owners, running.

    Returns dict(changed, steps, before, after, pruned, chains). Steps are tuples:
    ('create_bridge', name, mtu), ('set_mtu', name, mtu), ('del_address', name, cidr),
    ('add_address', name, cidr), ('set_up', name), ('delete_tap', tap),
    ('set_forwarding', ifname, value), ('nft', commands), ('delete_bridge', name).
    """
    name = desired['name']
    link = actual.get('link')
    if link is not None and link.get('kind') != 'bridge':
        raise HostError("%s exists%s and is not a bridge (kind %s); refusing to touch it"
                        % (name, _where(desired), link.get('kind') or 'device'))
    fw_before = actual['fw']
    port_taps = [p['name'] for p in actual.get('ports') or [] if p.get('kind') == 'tun']
    before = view_of(desired, actual)
    pruned = []
    if desired['prune_taps']:
        pruned = prune_candidates(name, actual.get('taps') or [], actual.get('owners') or {},
                                  actual.get('running') or {})
    steps = [('delete_tap', tap) for tap in pruned]
    taps_after = [t for t in port_taps if t not in pruned]
    forwarding = actual.get('forwarding') or {}
    other_uplinks = actual.get('other_uplinks') or {}

    dhcp_now = actual.get('dhcp') or {}
    if desired['state'] == 'absent':
        busy = [b for b in in_use(name, actual.get('ports') or [], actual.get('owners') or {},
                                  actual.get('running') or {}) if b[0] not in pruned]
        if busy and link is not None and not desired['force']:
            raise HostError("bridge %s is in use: %s; stop those VMs first or set force: true" % (
                name, ', '.join('tap %s (%s)' % (tap, 'VM %s' % vm if vm else 'held open by a process')
                                for tap, vm in busy)), busy_taps=[tap for tap, _vm in busy])
        if dhcp_now.get('exists'):
            steps.append(('dhcp_remove', name))
        if link is not None:
            steps.append(('delete_bridge', name))
        steps.extend(_restore_uplink(fw_before, None, other_uplinks, forwarding))
        commands = fw.transaction(name, actual.get('table'), {})
        if commands:
            steps.append(('nft', commands))
        after = _view('absent', [], None, {}, [])
        return _finish(steps, before, after, pruned, {})

    # present: the link
    if link is None:
        steps.append(('create_bridge', name, desired['mtu']))
        mtu_after = desired['mtu'] or DEFAULT_BRIDGE_MTU
    else:
        mtu_after = link['mtu']
        if desired['mtu'] and desired['mtu'] != link['mtu']:
            steps.append(('set_mtu', name, desired['mtu']))
            mtu_after = desired['mtu']
    current = actual.get('addresses') or []
    if desired['addresses'] is None:
        addresses_after = visible_addresses(current)
    else:
        for address in visible_addresses(current, desired['addresses']):
            if address not in desired['addresses']:
                steps.append(('del_address', name, address))
        for address in desired['addresses']:
            if address not in current:
                steps.append(('add_address', name, address))
        addresses_after = list(desired['addresses'])
    if link is None or not link.get('up'):
        steps.append(('set_up', name))

    # present: the firewall and forwarding
    nat_before = bool(fw_before.get('nat'))
    nat_after = nat_before if desired['nat'] is None else bool(desired['nat'])
    settings = {
        'nat': nat_after,
        'isolation': bool(fw_before.get('isolation')) if desired['isolation'] is None else bool(desired['isolation']),
        'egress': fw_before.get('egress') if desired['egress'] is None else desired['egress'],
    }
    bridge_now = forwarding.get(name) if link is not None else actual.get('default_forwarding')
    enable = []
    if nat_after:
        uplink = _resolve_uplink(desired, actual, nat_before)
        if nat_before and fw_before.get('uplink') == uplink:
            uplink_orig = fw_before.get('uplink_forwarding')
        else:
            uplink_orig = other_uplinks.get(uplink, forwarding.get(uplink))
        settings.update(uplink=uplink, subnets=subnets_of(addresses_after), uplink_forwarding=uplink_orig,
                        bridge_forwarding=fw_before.get('bridge_forwarding') if nat_before else bridge_now)
        if bridge_now != 1:
            enable.append(('set_forwarding', name, 1))
        if forwarding.get(uplink) != 1:
            enable.append(('set_forwarding', uplink, 1))
    restore = _restore_uplink(fw_before, settings.get('uplink') if nat_after else None, other_uplinks, forwarding)
    if nat_before and not nat_after and link is not None:
        orig = fw_before.get('bridge_forwarding')
        if orig is not None and bridge_now != orig:
            restore.append(('set_forwarding', name, orig))
    chains = fw.bridge_chains(name, settings)
    commands = fw.transaction(name, actual.get('table'), chains)
    steps.extend(restore)
    if commands:
        steps.append(('nft', commands))
    steps.extend(enable)
    dhcp_settings = plan_dhcp(desired, dhcp_now, addresses_after, nat_after, steps)
    after = _view('present', addresses_after, mtu_after, settings, taps_after, dhcp_settings, dhcp_settings is not None)
    return _finish(steps, before, after, pruned, chains)


def plan_dhcp(desired, now, addresses_after, nat_after, steps):
    """The DHCP server's steps (appended to ``steps``, after the bridge has its addresses and
    rules) and its settings after them (None: no server).

    now (see NetworkManager.gather): exists (any file of a server), config (the configuration
    file's text), settings, pid (the live server's, or None), files and wanted (the VMs' hosts
    files as they are and as the records want them), paths. The server restarts only when its
    configuration changes; the VMs' files are re-read by dnsmasq without a restart."""
    name = desired['name']
    if desired['dhcp'] is None:
        if now.get('exists'):
            steps.append(('dhcp_remove', name))
        return None
    settings = dhcp.check_against_bridge(desired['dhcp'], addresses_after, nat_after, name)
    config = dhcp.render_config(name, settings, now['paths'])
    running = now.get('pid') is not None
    config_changed = now.get('config') != config or now.get('settings') != settings
    if config_changed and running:
        steps.append(('dhcp_stop', name))
    if config_changed:
        steps.append(('dhcp_write', name, config, settings))
    files = dhcp.nic_changes(now.get('files') or {}, now.get('wanted') or {})
    if files:
        steps.append(('dhcp_hosts', name, files))
    if config_changed or not running:
        steps.append(('dhcp_start', name))
    return settings


def _restore_uplink(fw_before, uplink_after, other_uplinks, forwarding):
    """Put the old uplink's forwarding flag back when our NAT no longer uses it."""
    old = fw_before.get('uplink') if fw_before.get('nat') else None
    if not old or old == uplink_after or old in other_uplinks:
        return []
    orig = fw_before.get('uplink_forwarding')
    if orig is None or old not in forwarding or forwarding.get(old) == orig:
        return []
    return [('set_forwarding', old, orig)]


def _finish(steps, before, after, pruned, chains):
    return {'changed': bool(steps), 'steps': steps, 'before': before, 'after': after,
            'pruned': pruned, 'chains': chains}


# ---------------------------------------------------------------------------------------------
# running it

class NetworkLock:
    """One ch_network run at a time per host (run_dir): the uplink bookkeeping and our nft
    table are shared between bridges."""

    def __init__(self, run_dir, timeout=LOCK_TIMEOUT):
        self.path = os.path.join(run_dir, LOCK_NAME)
        self.timeout = timeout
        self.fd = None

    def __enter__(self):
        ensure_dir(os.path.dirname(self.path))
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except (IOError, OSError) as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    os.close(self.fd)
                    self.fd = None
                    raise BusyError("another ch_network run holds %s and did not release it within %.0f s"
                                    % (self.path, self.timeout))
                time.sleep(0.05)

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        return False


def _running_checker():
    from ansible_collections.cloudhv.ch.plugins.module_utils.process import running_pid  # pylint: disable=import-outside-toplevel
    return running_pid


class NetworkManager:
    """Glue between the plan and the host. ``nl`` is a netlink.Netlink, ``nft`` a firewall.Nft,
    ``layout`` a store.Layout; ``is_running(vm) -> bool`` defaults to process.running_pid on the
    layout's pid file and socket."""

    def __init__(self, nl, nft, layout, is_running=None):
        self.nl = nl
        self.nft = nft
        self.layout = layout
        self._is_running = is_running
        self._dnsmasq = None

    def is_running(self, vm):
        if self._is_running is not None:
            return self._is_running(vm)
        running_pid = _running_checker()
        return running_pid(self.layout.pid_path(vm), self.layout.socket_path(vm)) is not None

    def _needs_firewall(self, desired):
        return desired['state'] == 'present' and (
            desired['nat'] or desired['isolation'] or (desired['egress'] or {}).get('default') == 'drop')

    def gather(self, desired):
        name = desired['name']
        links = self.nl.links()
        by_name = dict((entry['name'], entry) for entry in links)
        link = by_name.get(name)
        actual = {
            'link': link,
            'addresses': self.nl.addresses(name) if link else [],
            'ports': [entry for entry in links if link is not None and entry['master'] == name],
            'link_names': sorted(by_name),
            'default_uplink': None,
            'default_forwarding': None,
            'forwarding': {},
            'taps': [entry for entry in links if entry['kind'] == 'tun' and is_collection_tap(entry['name'])],
            'owners': {},
            'running': {},
        }
        if self.nft.available() or self._needs_firewall(desired):
            table = self.nft.list_table()     # raises MissingDependency when nft is missing
        else:
            table = None                      # no nft, no rules of ours can exist
        actual['table'] = table
        actual['fw'] = fw.decode_bridge(fw.bridge_part(table, name), name)
        actual['other_uplinks'] = fw.nat_uplinks(table, exclude_bridge=name)
        if desired['state'] == 'present' and (desired['nat'] or (desired['nat'] is None and actual['fw']['nat'])):
            actual['default_uplink'] = self.nl.default_route_interface()
            actual['default_forwarding'] = self.nl.default_forwarding()
        interesting = set([name, actual['fw'].get('uplink'), desired.get('uplink'), actual['default_uplink']])
        for ifname in interesting:
            if ifname and ifname in by_name:
                actual['forwarding'][ifname] = self.nl.get_forwarding(ifname)
        actual['dhcp'] = self.gather_dhcp(desired)
        if desired['prune_taps'] or desired['state'] == 'absent':
            for vm in self.layout.list_vms():
                for tap in vm_record.managed_taps(self.layout.read_record(vm)):
                    actual['owners'][tap] = vm
            for vm in sorted(set(actual['owners'].values())):
                actual['running'][vm] = bool(self.is_running(vm))
        return actual

    def dnsmasq(self, name):
        if self._dnsmasq is None:
            self._dnsmasq = dhcp.Dnsmasq(self.layout, name)
        return self._dnsmasq

    def gather_dhcp(self, desired):
        """The bridge's DHCP server: its files, whether it runs, and the VMs' hosts files the
        records ask for (see plan_dhcp)."""
        server = self.dnsmasq(desired['name'])
        paths = server.paths
        if desired['dhcp'] is not None and desired['state'] == 'present' and server.binary is None:
            server.binary = dhcp.find_dnsmasq()     # MissingDependency before anything changes
        pid = server.pid()
        now = {
            'paths': paths.as_dict(),
            'pid': pid,
            'pid_file': os.path.exists(paths.pid),
            'config': server.config(),
            'settings': dhcp.read_settings(self.layout, desired['name']),
            'files': dhcp.read_nic_files(paths),
            'wanted': {},
        }
        now['exists'] = pid is not None or any(os.path.exists(p) for p in (paths.dir, paths.leases, paths.log))
        if desired['dhcp'] is not None and desired['state'] == 'present':
            for vm in self.layout.list_vms():
                networks = vm_record.networks(self.layout.read_record(vm))
                now['wanted'].update(dhcp.nic_files(vm, networks, desired['name']))
        return now

    def execute(self, steps):
        for step in steps:
            op = step[0]
            if op == 'create_bridge':
                self.nl.create_bridge(step[1], step[2])
            elif op == 'set_mtu':
                self.nl.set_mtu(step[1], step[2])
            elif op == 'del_address':
                self.nl.del_address(step[1], step[2])
            elif op == 'add_address':
                self.nl.add_address(step[1], step[2])
            elif op == 'set_up':
                self.nl.set_up(step[1])
            elif op in ('delete_tap', 'delete_bridge'):
                self.nl.delete_link(step[1])
            elif op == 'set_forwarding':
                self.nl.set_forwarding(step[1], step[2])
            elif op == 'nft':
                self.nft.apply(step[1])
            elif op == 'dhcp_stop':
                self.dnsmasq(step[1]).stop()
            elif op == 'dhcp_write':
                self.dnsmasq(step[1]).write(step[2], step[3])
            elif op == 'dhcp_hosts':
                dhcp.write_nic_files(self.dnsmasq(step[1]).paths, step[2])
            elif op == 'dhcp_start':
                with in_netns(self.nl.netns):   # dnsmasq is started inside the bridge's namespace
                    self.dnsmasq(step[1]).start()
            elif op == 'dhcp_remove':
                self.dnsmasq(step[1]).remove()
            else:   # pragma: no cover
                raise ValueError("unknown step %r" % (op,))

    def describe(self, desired, view, pruned, starts_dhcp=False):
        """The ``network`` result from a before/after view. ``starts_dhcp``: check mode, and the
        run would (re)start the DHCP server (so there is no pid to show yet)."""
        name = desired['name']
        link = self.nl.link(name) if view['state'] == 'present' else None
        result = dict(view)
        result['name'] = name
        result['ifindex'] = link['ifindex'] if link else None
        result['pruned'] = list(pruned)
        if view.get('dhcp'):
            server = self.dnsmasq(name)
            result['dhcp'] = dict(view['dhcp'], pid=None if starts_dhcp else server.pid(),
                                  leases=dhcp.read_leases(server.paths.leases))
        return result

    def run(self, desired, check_mode=False):
        """Plan, execute unless in check mode, and return the module result."""
        lock_dir = self.layout.run_dir
        if check_mode and not os.path.isdir(lock_dir):
            result = self._run(desired, True)
        else:
            with NetworkLock(lock_dir):
                result = self._run(desired, check_mode)
        return result

    def _run(self, desired, check_mode):
        actual = self.gather(desired)
        the_plan = plan(desired, actual)
        if check_mode or not the_plan['changed']:
            view = the_plan['after']
        else:
            self.execute(the_plan['steps'])
            # read back what the host has now, exactly as the next run will see it
            view = view_of(desired, self.gather(dict(desired, prune_taps=False, state='present')))
        starts = any(step[0] == 'dhcp_start' for step in the_plan['steps'])
        network = self.describe(desired, view, the_plan['pruned'], starts_dhcp=check_mode and starts)
        diff = {'before': dict(the_plan['before']), 'after': dict(the_plan['after'])}
        if the_plan['pruned']:
            diff['after']['pruned'] = list(the_plan['pruned'])
        result = {'changed': the_plan['changed'], 'network': network, 'diff': diff}
        now = actual.get('dhcp') or {}
        if starts and now.get('settings') and now.get('pid') is None and now.get('pid_file'):
            result['warnings'] = ["the dnsmasq of bridge %s was not running (it died or was killed); %s"
                                  % (desired['name'], 'it would be started again' if check_mode else 'started it again')]
        return result
