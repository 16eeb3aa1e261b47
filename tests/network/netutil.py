"""Helpers for ch_network tests: throwaway network namespaces, a small three-namespace topology
(host with the bridge, a "VM" and the "outside"), TCP probes bounded by timeouts, read-back with
iproute2 and nft, and a runner for the engine exactly as the module drives it.
The fixtures wrapping them are in conftest.py."""
import json
import os
import selectors
import signal
import subprocess
import sys
import uuid

from ansible_collections.cloudhv.ch.plugins.module_utils.firewall import Nft
from ansible_collections.cloudhv.ch.plugins.module_utils.netlink import Netlink
from ansible_collections.cloudhv.ch.plugins.module_utils.network import NetworkManager
from ansible_collections.cloudhv.ch.plugins.module_utils.network_options import desired_from_params
from ansible_collections.cloudhv.ch.plugins.module_utils.store import Layout
from tests.support.netns import remove_netns

HERE = os.path.dirname(os.path.abspath(__file__))
NETTOOL = os.path.join(HERE, 'nettool.py')
CONNECT_TIMEOUT = 1.0


def sh(*argv, ns=None, check=True, timeout=20, input=None):
    """Run a command (inside namespace ``ns`` when given); returns CompletedProcess."""
    argv = [str(a) for a in argv]
    if ns:
        argv = ['ip', 'netns', 'exec', ns] + argv
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input, check=False)
    if check and proc.returncode != 0:
        raise AssertionError('%s failed (%d): %s %s' % (' '.join(argv), proc.returncode, proc.stdout, proc.stderr))
    return proc


def links(ns):
    """{name: 'ip -j -d link' entry} of a namespace (read with iproute2, not the code under test)."""
    return dict((l['ifname'], l) for l in json.loads(sh('ip', '-j', '-d', 'link', 'show', ns=ns).stdout))


def addrs(ns, dev):
    out = json.loads(sh('ip', '-j', 'addr', 'show', 'dev', dev, ns=ns).stdout)
    return sorted('%s/%s' % (a['local'], a['prefixlen']) for a in out[0]['addr_info']
                  if not a['local'].startswith('fe80:'))


def sysctl(ns, path):
    return sh('cat', '/proc/sys/' + path, ns=ns).stdout.strip()


def nft_json(ns, *what):
    proc = sh('nft', '-j', 'list', *what, ns=ns, check=False)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)['nftables']


def nft_ruleset(ns):
    return nft_json(ns, 'ruleset')


def our_table(ns):
    """{chain: {'chain': props, 'rules': [rule dicts]}} of table inet cloudhv, or None."""
    items = nft_json(ns, 'table', 'inet', 'cloudhv')
    if items is None:
        return None
    chains = {}
    for item in items:
        if 'chain' in item:
            chains[item['chain']['name']] = {'chain': item['chain'], 'rules': []}
    for item in items:
        if 'rule' in item:
            chains[item['rule']['chain']]['rules'].append(item['rule'])
    return chains


class Namespaces(object):
    def __init__(self):
        self.names = []
        self.procs = []

    def new(self, tag='n'):
        name = 'cht%s-%s' % (tag, uuid.uuid4().hex[:10])
        sh('ip', 'netns', 'add', name)
        self.names.append(name)
        sh('ip', 'link', 'set', 'lo', 'up', ns=name)
        return name

    def spawn(self, ns, *argv):
        """Start a process (inside ``ns`` unless it is None); killed in cleanup."""
        prefix = ['ip', 'netns', 'exec', ns] if ns else []
        proc = subprocess.Popen(prefix + [str(a) for a in argv],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def serve(self, ns, *ports):
        """A TCP server in ``ns`` on ``ports`` answering with the peer address it sees."""
        proc = self.spawn(ns, sys.executable, NETTOOL, 'serve', *ports)
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=10) or proc.stdout.readline().strip() != 'ready':
            raise AssertionError('server in %s did not start: %s' % (ns, proc.stderr.read() if proc.poll() is not None else ''))
        return proc

    def cleanup(self):
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        for name in self.names:
            # what still runs in the namespace (a dnsmasq the test's engine started) goes with it
            remove_netns(name)


def connect(ns, host, port, timeout=CONNECT_TIMEOUT):
    """TCP connect from ``ns``: the peer address the server saw, or None when it failed."""
    proc = sh(sys.executable, NETTOOL, 'connect', host, port, timeout, ns=ns, check=False, timeout=timeout + 10)
    return proc.stdout.strip() if proc.returncode == 0 else None


def resolve(ns, name, server, proto='udp'):
    """A records of ``name`` asked from ``server`` (port 53) inside ``ns``: a sorted list of
    addresses, or the rcode's name ('NXDOMAIN', 'REFUSED'), or None when nothing answered."""
    proc = sh(sys.executable, NETTOOL, 'dns', name, server, proto, ns=ns, check=False, timeout=15)
    if proc.returncode != 0:
        return None
    lines = proc.stdout.split()
    return lines[0] if lines and not lines[0][0].isdigit() else sorted(lines)


UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc calls this with the event; 'bound' carries the lease in the environment
if [ "$1" = bound ]; then
  printf 'ip=%s\\nmask=%s\\nrouter=%s\\ndns=%s\\ndomain=%s\\nhostname=%s\\nlease=%s\\n' \\
    "$ip" "$mask" "$router" "$dns" "$domain" "$hostname" "$lease" > "$UDHCPC_OUT"
fi
exit 0
"""


class DhcpClient(object):
    """A namespace attached to ``bridge`` (in ``host``) through a veth pair, whose eth0 has ``mac``:
    the stand-in for a VM's NIC. :meth:`lease` runs busybox udhcpc (a real DHCP client) once."""

    def __init__(self, spaces, host, bridge, mac, tmp_path, tag='c'):
        self.ns = spaces.new(tag)
        self.mac = mac
        self.port = 'dp%s' % uuid.uuid4().hex[:8]
        self.out = str(tmp_path / ('udhcpc-%s.env' % self.port))
        self.script = str(tmp_path / 'udhcpc-script.sh')
        with open(self.script, 'w') as handle:
            handle.write(UDHCPC_SCRIPT)
        os.chmod(self.script, 0o755)
        sh('ip', 'link', 'add', self.port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', self.ns, ns=host)
        sh('ip', 'link', 'set', self.port, 'master', bridge, ns=host)
        sh('ip', 'link', 'set', self.port, 'up', ns=host)
        sh('ip', 'link', 'set', 'eth0', 'address', mac, ns=self.ns)
        sh('ip', 'link', 'set', 'eth0', 'up', ns=self.ns)

    def lease(self, release=False):
        """{ip, mask, router, dns, domain, hostname, lease} the server handed out, or None."""
        if os.path.exists(self.out):
            os.unlink(self.out)
        argv = ['env', 'UDHCPC_OUT=%s' % self.out, 'busybox', 'udhcpc', '-i', 'eth0', '-n', '-q', '-f',
                '-t', '6', '-T', '1', '-A', '1', '-O', 'hostname', '-O', 'domain', '-s', self.script]
        if release:
            argv.append('-R')
        proc = sh(*argv, ns=self.ns, check=False, timeout=60)
        if proc.returncode != 0 or not os.path.exists(self.out):
            return None
        with open(self.out) as handle:
            return dict(line.split('=', 1) for line in handle.read().splitlines() if '=' in line)


class Topology(object):
    """host: bridge (made by the tests) + port 'vmport' to the VM, uplink 'up0' to the outside
    (192.0.2.1/24, default route via 192.0.2.2). vm: eth0 10.77.0.2/24 via 10.77.0.1.
    out: eth0 192.0.2.2/24 and 198.51.100.2/24, route to 10.77.0.0/24 via 192.0.2.1."""

    BRIDGE = 'br0'
    VM_IP = '10.77.0.2'
    GATEWAY = '10.77.0.1/24'
    OUT_IP = '192.0.2.2'
    OUT_IP2 = '198.51.100.2'
    UPLINK_IP = '192.0.2.1'

    def __init__(self, spaces):
        self.spaces = spaces
        self.host = spaces.new('h')
        self.vm = spaces.new('v')
        self.out = spaces.new('o')
        sh('ip', 'link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', self.out, ns=self.host)
        sh('ip', 'link', 'add', 'vmport', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', self.vm, ns=self.host)
        for cmd in (('ip', 'addr', 'add', '192.0.2.1/24', 'dev', 'up0'), ('ip', 'link', 'set', 'up0', 'up'),
                    ('ip', 'link', 'set', 'vmport', 'up'), ('ip', 'route', 'add', 'default', 'via', '192.0.2.2')):
            sh(*cmd, ns=self.host)
        for cmd in (('ip', 'addr', 'add', '10.77.0.2/24', 'dev', 'eth0'), ('ip', 'link', 'set', 'eth0', 'up'),
                    ('ip', 'route', 'add', 'default', 'via', '10.77.0.1')):
            sh(*cmd, ns=self.vm)
        for cmd in (('ip', 'addr', 'add', '192.0.2.2/24', 'dev', 'eth0'),
                    ('ip', 'addr', 'add', '198.51.100.2/24', 'dev', 'eth0'), ('ip', 'link', 'set', 'eth0', 'up'),
                    ('ip', 'route', 'add', '10.77.0.0/24', 'via', '192.0.2.1')):
            sh(*cmd, ns=self.out)

    def plug_vm(self):
        """Attach the VM's veth to the bridge (after ch_network created it)."""
        sh('ip', 'link', 'set', 'vmport', 'master', self.BRIDGE, ns=self.host)


class Engine(object):
    """ch_network's engine driven exactly like the module's action()."""

    def __init__(self, tmp_path, netns, is_running=None, nft_binary=None):
        self.netns = netns
        self.state_dir = str(tmp_path / 'state')
        self.run_dir = str(tmp_path / 'run')
        self.is_running = is_running
        self.nft_binary = nft_binary

    @property
    def layout(self):
        return Layout(self.state_dir, self.run_dir)

    def params(self, **params):
        full = dict(state='present', netns=self.netns, addresses=None, mtu=None, nat=None, uplink=None,
                    isolation=None, egress=None, dhcp=None, prune_taps=False, force=False)
        full.update(params)
        return full

    def run(self, check=False, **params):
        desired = desired_from_params(self.params(**params))
        with Netlink(netns=desired['netns']) as nl:
            manager = NetworkManager(nl, Nft(netns=desired['netns'], binary=self.nft_binary), self.layout,
                                     is_running=self.is_running)
            return manager.run(desired, check_mode=check)
