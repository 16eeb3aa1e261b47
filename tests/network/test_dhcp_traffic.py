"""ch_network dhcp with the engine in-process (as the module drives it) in throwaway namespaces:
DHCP and DNS still pass isolation and an egress allow-list (which drop everything else as
before, with the same rules), and router advertisements give an IPv6 client its address by SLAAC.
The DHCP clients are busybox udhcpc in namespaces of their own, attached to the bridge by veth."""
import functools
import json
import time

from ansible_collections.cloudhv.ch.plugins.module_utils import vm_record
from ansible_collections.cloudhv.ch.plugins.module_utils.store import Layout

from tests.network.netutil import DhcpClient, Topology, connect, our_table, resolve, sh

MAC = '02:00:00:77:00:50'
RANGE = '10.77.0.100-10.77.0.120'


def write_vm(layout, name, mac, address=None):
    """A VM record as ch_vm writes it (only what the DHCP server reads: the NICs)."""
    net = vm_record.nic('chv0000000000aa', 'br0', mac=mac, **({'address': address} if address else {}))
    layout.ensure_dirs(name)
    layout.write_record(name, vm_record.build(networks=[net]))


def test_dhcp_and_dns_pass_isolation_and_egress(topo, namespaces, engine_factory, tmp_path):
    eng = engine_factory(topo.host)
    run = functools.partial(eng.run, name='br0')
    write_vm(Layout(eng.state_dir, eng.run_dir), 'web1', MAC, '10.77.0.50')
    filters = dict(addresses=[Topology.GATEWAY], nat=True, isolation=True,
                   egress={'default': 'drop', 'allow': [{'dest': '198.51.100.0/24', 'proto': 'tcp', 'ports': [80]}]})
    without = run(**filters)
    rules = our_table(topo.host)
    try:
        dhcp = {'ranges': [RANGE], 'domain': 'lab.test'}
        res = run(dhcp=dhcp, **filters)
        assert res['changed'] is True and without['changed'] is True
        assert res['network']['dhcp']['router'] == '10.77.0.1'      # NAT on: the bridge is the router
        # nothing else changes in the rules
        assert our_table(topo.host) == rules
        assert run(dhcp=dhcp, **filters)['changed'] is False
        client = DhcpClient(namespaces, topo.host, Topology.BRIDGE, MAC, tmp_path)
        lease = client.lease()
        assert lease is not None and lease['ip'] == '10.77.0.50' and lease['router'] == '10.77.0.1'
        assert lease['dns'] == '10.77.0.1' and lease['hostname'] == 'web1'
        sh('ip', 'addr', 'add', '10.77.0.50/24', 'dev', 'eth0', ns=client.ns)
        sh('ip', 'route', 'add', 'default', 'via', lease['router'], ns=client.ns)
        for proto in ('udp', 'tcp'):
            assert resolve(client.ns, 'web1.lab.test', '10.77.0.1', proto) == ['10.77.0.50']
        # other traffic: only what the allow-list names passes
        namespaces.serve(topo.out, 80, 81)
        assert connect(client.ns, Topology.OUT_IP2, 80) is not None
        assert connect(client.ns, Topology.OUT_IP2, 81) is None
        assert connect(client.ns, Topology.OUT_IP, 80) is None
        # isolation: the outside cannot open connections to the client
        namespaces.serve(client.ns, 22)
        assert connect(topo.out, '10.77.0.50', 22) is None
        # another MAC still gets a dynamic lease through the same rules
        other = DhcpClient(namespaces, topo.host, Topology.BRIDGE, '02:00:00:77:00:51', tmp_path, tag='d').lease()
        assert other is not None and 100 <= int(other['ip'].split('.')[-1]) <= 120
    finally:
        run(state='absent', force=True)


def test_router_advertisements_give_slaac_addresses(netns, namespaces, engine_factory, tmp_path):
    eng = engine_factory(netns)
    run = functools.partial(eng.run, name='br0')
    try:
        res = run(addresses=['10.77.0.1/24', 'fd00:77::1/64'], dhcp={'ranges': [RANGE]})
        assert res['changed'] is True and res['network']['dhcp']['running'] is True
        client = DhcpClient(namespaces, netns, 'br0', '02:00:00:77:00:60', tmp_path)
        sh('sysctl', '-q', '-w', 'net.ipv6.conf.eth0.accept_ra=1', ns=client.ns)
        deadline = time.monotonic() + 30
        found = []
        while time.monotonic() < deadline and not found:
            out = json.loads(sh('ip', '-j', '-6', 'addr', 'show', 'dev', 'eth0', 'scope', 'global', ns=client.ns).stdout)
            found = [a['local'] for entry in out for a in entry.get('addr_info', []) if 'local' in a
                     and a['local'].startswith('fd00:77::')]
            time.sleep(0.2)
        assert found, 'no SLAAC address from the bridge\'s router advertisements'
        # the SLAAC address is built from the client's MAC (EUI-64)
        assert found[0] == 'fd00:77::ff:fe77:60'
        # a bridge without an IPv6 /64 sends none
        assert run(addresses=['10.77.0.1/24'], dhcp={'ranges': [RANGE]})['changed'] is True
    finally:
        run(state='absent', force=True)


def test_two_bridges_each_with_its_own_server(netns, namespaces, engine_factory, tmp_path):
    eng = engine_factory(netns)
    try:
        for index, name in enumerate(('br0', 'br1')):
            res = eng.run(name=name, addresses=['10.7%d.0.1/24' % index],
                          dhcp={'ranges': ['10.7%d.0.100-10.7%d.0.120' % (index, index)]})
            assert res['changed'] is True and res['network']['dhcp']['running'] is True
        pids = [eng.run(name=name, addresses=['10.7%d.0.1/24' % i], dhcp={'ranges': ['10.7%d.0.100-10.7%d.0.120' % (i, i)]})
                ['network']['dhcp']['pid'] for i, name in enumerate(('br0', 'br1'))]
        assert None not in pids and pids[0] != pids[1]
        for index, name in enumerate(('br0', 'br1')):
            client = DhcpClient(namespaces, netns, name, '02:00:00:77:01:0%d' % index, tmp_path, tag='c%d' % index)
            lease = client.lease()
            assert lease is not None and lease['ip'].startswith('10.7%d.0.' % index), (name, lease)
            assert lease['router'] == ''        # no NAT, no router set: no router option at all
    finally:
        for name in ('br0', 'br1'):
            eng.run(name=name, state='absent', force=True)
