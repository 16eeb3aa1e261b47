"""Egress allow-lists and isolation with real traffic: a "VM" namespace behind the bridge and an
"outside" namespace behind the uplink, TCP connects bounded by a 1 s timeout."""
from tests.network.netutil import connect, our_table, sh


def _up(topo, engine, **params):
    res = engine.run(name='br0', addresses=[topo.GATEWAY], nat=True, **params)
    return res


def test_egress_allow_list(topo, namespaces, engine_factory):
    engine = engine_factory(topo.host)
    namespaces.serve(topo.out, 8080, 9090)
    _up(topo, engine)
    topo.plug_vm()
    # control: without egress rules everything passes
    for host, port in ((topo.OUT_IP, 8080), (topo.OUT_IP, 9090), (topo.OUT_IP2, 8080)):
        assert connect(topo.vm, host, port) == topo.UPLINK_IP, (host, port)

    egress = {'default': 'drop', 'allow': [{'dest': topo.OUT_IP + '/32', 'proto': 'tcp', 'ports': [8080]}]}
    check = _up(topo, engine, egress=egress)
    assert check['changed'] is True
    assert check['network']['egress'] == {'default': 'drop', 'allow': [
        {'dest': topo.OUT_IP + '/32', 'proto': 'tcp', 'ports': [8080]}]}
    assert connect(topo.vm, topo.OUT_IP, 8080) == topo.UPLINK_IP          # allowed
    assert connect(topo.vm, topo.OUT_IP, 9090) is None                    # other port dropped
    assert connect(topo.vm, topo.OUT_IP2, 8080) is None                   # other destination dropped
    assert _up(topo, engine, egress=egress)['changed'] is False

    # a whole network, any protocol
    egress['allow'].append({'dest': '198.51.100.0/24'})
    assert _up(topo, engine, egress=egress)['changed'] is True
    assert connect(topo.vm, topo.OUT_IP2, 9090) == topo.UPLINK_IP
    assert connect(topo.vm, topo.OUT_IP, 9090) is None
    # udp-only entry does not open tcp
    egress['allow'] = [{'dest': topo.OUT_IP + '/32', 'proto': 'udp', 'ports': [8080]}]
    _up(topo, engine, egress=egress)
    assert connect(topo.vm, topo.OUT_IP, 8080) is None

    # back to accept: the forward chain disappears and everything passes again
    res = _up(topo, engine, egress={'default': 'accept'})
    assert res['network']['egress'] == {'default': 'accept', 'allow': []}
    assert 'br0-fwd' not in our_table(topo.host)
    assert connect(topo.vm, topo.OUT_IP, 9090) == topo.UPLINK_IP


def test_egress_port_ranges(topo, namespaces, engine_factory):
    """Ranges go into nft as intervals; what nft lists back decodes to the same entry, so a second
    run (and the same ports written as adjacent single ports) changes nothing."""
    engine = engine_factory(topo.host)
    namespaces.serve(topo.out, 8080, 8081, 9090)
    _up(topo, engine)
    topo.plug_vm()
    egress = {'default': 'drop', 'allow': [{'dest': topo.OUT_IP + '/32', 'proto': 'tcp', 'ports': ['8080-8081', 22]}]}
    res = _up(topo, engine, egress=egress)
    assert res['changed'] is True
    assert res['network']['egress']['allow'][0]['ports'] == [22, '8080-8081']
    assert connect(topo.vm, topo.OUT_IP, 8080) == topo.UPLINK_IP
    assert connect(topo.vm, topo.OUT_IP, 8081) == topo.UPLINK_IP
    assert connect(topo.vm, topo.OUT_IP, 9090) is None
    assert '8080-8081' in sh('nft', 'list', 'table', 'inet', 'cloudhv', ns=topo.host).stdout
    assert _up(topo, engine, egress=egress)['changed'] is False
    same = {'default': 'drop', 'allow': [{'dest': topo.OUT_IP + '/32', 'proto': 'tcp', 'ports': [8081, 22, 8080]}]}
    assert _up(topo, engine, egress=same)['changed'] is False


def test_egress_drop_still_answers_inbound(topo, namespaces, engine_factory):
    """Replies of the VM to connections made to it are not egress traffic."""
    engine = engine_factory(topo.host)
    namespaces.serve(topo.vm, 2222)
    _up(topo, engine, egress={'default': 'drop', 'allow': []})
    topo.plug_vm()
    assert connect(topo.out, topo.VM_IP, 2222) == topo.OUT_IP


def test_isolation(topo, namespaces, engine_factory):
    engine = engine_factory(topo.host)
    namespaces.serve(topo.vm, 2222)
    namespaces.serve(topo.out, 8080)
    _up(topo, engine)
    topo.plug_vm()
    # control: without isolation the outside reaches the VM (its route points at the host)
    assert connect(topo.out, topo.VM_IP, 2222) == topo.OUT_IP

    res = _up(topo, engine, isolation=True)
    assert res['changed'] is True and res['network']['isolation'] is True
    assert connect(topo.out, topo.VM_IP, 2222) is None                    # new inbound: dropped
    assert connect(topo.vm, topo.OUT_IP, 8080) == topo.UPLINK_IP          # replies to the VM: pass
    assert _up(topo, engine, isolation=True)['changed'] is False
    # isolation omitted: not managed, stays on
    assert _up(topo, engine)['network']['isolation'] is True
    assert connect(topo.out, topo.VM_IP, 2222) is None

    assert _up(topo, engine, isolation=False)['changed'] is True
    assert connect(topo.out, topo.VM_IP, 2222) == topo.OUT_IP


def test_other_tables_survive_everything(topo, engine_factory):
    """A foreign table (even one hooked at forward and postrouting) is never touched."""
    engine = engine_factory(topo.host)
    sh('nft', '-f', '-', ns=topo.host, input='''
table inet other {
  chain filt {
    type filter hook forward priority -10; policy accept;
    tcp dport 4444 drop comment "theirs"
  }
  chain postr {
    type nat hook postrouting priority 50; policy accept;
  }
}
table ip legacy {
  chain c {
    ip daddr 203.0.113.7 counter
  }
}
''')

    def foreign():
        out = sh('nft', '-j', 'list', 'ruleset', ns=topo.host).stdout
        import json
        items = json.loads(out)['nftables']
        return [i for i in items if 'metainfo' not in i and
                (list(i.values())[0].get('table', list(i.values())[0].get('name')) != 'cloudhv')]
    before = foreign()
    assert len(before) > 4
    steps = [
        dict(name='br0', addresses=[topo.GATEWAY]),
        dict(name='br0', nat=True),
        dict(name='br0', isolation=True, egress={'default': 'drop', 'allow': [{'dest': '0.0.0.0/0', 'proto': 'icmp'}]}),
        dict(name='br0', addresses=['10.79.0.1/24'], mtu=1400),
        dict(name='br1', addresses=['10.80.0.1/24'], nat=True, isolation=True),
        dict(name='br0', nat=False, isolation=False, egress={'default': 'accept'}),
        dict(name='br0', state='absent'),
        dict(name='br1', state='absent', prune_taps=True),
    ]
    for step in steps:
        engine.run(check=True, **step)
        assert foreign() == before, step
        engine.run(**step)
        assert foreign() == before, step
    assert our_table(topo.host) is None
