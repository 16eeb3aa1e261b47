"""NAT: rules read back with nft -j, per-interface forwarding flags set and restored, and real
masqueraded traffic from the VM namespace to the outside."""
import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils.errors import MissingDependency

from tests.network.netutil import connect, our_table, sh, sysctl


def _fwd(ns, ifname):
    return sysctl(ns, 'net/ipv4/conf/%s/forwarding' % ifname)


def _match(expr, key):
    for item in expr:
        match = item.get('match')
        if not match:
            continue
        left = match['left']
        if left.get('meta', {}).get('key') == key or \
                '%s %s' % (left.get('payload', {}).get('protocol'), left.get('payload', {}).get('field')) == key:
            return match['right']
    return None


def test_nat_rules_forwarding_and_traffic(topo, namespaces, engine_factory):
    engine = engine_factory(topo.host)
    namespaces.serve(topo.out, 8080)
    assert _fwd(topo.host, 'up0') == '0'

    # control: a bridge without NAT does not forward
    engine.run(name='br0', addresses=[topo.GATEWAY, 'fd00:77::1/64'])
    topo.plug_vm()
    assert connect(topo.vm, topo.OUT_IP, 8080) is None

    res = engine.run(name='br0', addresses=[topo.GATEWAY, 'fd00:77::1/64'], nat=True)
    assert res['changed'] is True
    assert res['network']['nat'] is True and res['network']['uplink'] == 'up0'   # the default route's interface
    table = our_table(topo.host)
    assert sorted(table) == ['br0-nat']
    chain = table['br0-nat']['chain']
    assert (chain['type'], chain['hook'], chain['prio'], chain['policy']) == ('nat', 'postrouting', 100, 'accept')
    masq = [r for r in table['br0-nat']['rules'] if {'masquerade': None} in r['expr']]
    assert [(_match(r['expr'], 'ip saddr') or _match(r['expr'], 'ip6 saddr'), _match(r['expr'], 'oifname'))
            for r in masq] == [({'prefix': {'addr': '10.77.0.0', 'len': 24}}, 'up0'),
                               ({'prefix': {'addr': 'fd00:77::', 'len': 64}}, 'up0')]
    # per-interface flags only; the global switch is untouched
    assert _fwd(topo.host, 'br0') == '1' and _fwd(topo.host, 'up0') == '1'
    assert sysctl(topo.host, 'net/ipv4/ip_forward') == '0'
    assert _fwd(topo.host, 'all') == '0' and _fwd(topo.host, 'vmport') == '0'

    # real traffic: the outside sees the uplink's address, not the VM's
    assert connect(topo.vm, topo.OUT_IP, 8080) == topo.UPLINK_IP

    # changing the addresses rewrites the masquerade rules
    engine.run(name='br0', addresses=['10.77.0.1/16'], nat=True)
    masq = [r for r in our_table(topo.host)['br0-nat']['rules'] if {'masquerade': None} in r['expr']]
    assert [_match(r['expr'], 'ip saddr') for r in masq] == [{'prefix': {'addr': '10.77.0.0', 'len': 16}}]
    assert engine.run(name='br0', addresses=['10.77.0.1/16'], nat=True)['changed'] is False

    # NAT off: rules gone, both flags back to what they were
    res = engine.run(name='br0', nat=False)
    assert res['changed'] is True and res['network']['nat'] is False
    assert our_table(topo.host) is None
    assert _fwd(topo.host, 'br0') == '0' and _fwd(topo.host, 'up0') == '0'
    assert connect(topo.vm, topo.OUT_IP, 8080) is None
    assert engine.run(name='br0', nat=False)['changed'] is False


def test_tampered_rules_are_rewritten(topo, engine_factory):
    engine = engine_factory(topo.host)
    engine.run(name='br0', addresses=[topo.GATEWAY], nat=True)
    handle = [r for r in our_table(topo.host)['br0-nat']['rules'] if {'masquerade': None} in r['expr']][0]['handle']
    sh('nft', 'delete', 'rule', 'inet', 'cloudhv', 'br0-nat', 'handle', handle, ns=topo.host)
    check = engine.run(check=True, name='br0', addresses=[topo.GATEWAY], nat=True)
    assert check['changed'] is True
    res = engine.run(name='br0', addresses=[topo.GATEWAY], nat=True)
    assert res['changed'] is True
    assert len([r for r in our_table(topo.host)['br0-nat']['rules'] if {'masquerade': None} in r['expr']]) == 1
    assert engine.run(name='br0', addresses=[topo.GATEWAY], nat=True)['changed'] is False


def test_shared_uplink_restored_by_the_last_bridge(topo, engine_factory):
    engine = engine_factory(topo.host)
    engine.run(name='br0', addresses=['10.77.0.1/24'], nat=True)
    engine.run(name='br1', addresses=['10.78.0.1/24'], nat=True)
    assert _fwd(topo.host, 'up0') == '1'
    assert sorted(our_table(topo.host)) == ['br0-nat', 'br1-nat']
    engine.run(name='br0', state='absent')
    assert _fwd(topo.host, 'up0') == '1'            # br1 still needs it
    assert sorted(our_table(topo.host)) == ['br1-nat']
    engine.run(name='br1', state='absent')
    assert _fwd(topo.host, 'up0') == '0'            # restored by the last one
    assert our_table(topo.host) is None


def test_uplink_that_was_forwarding_stays_forwarding(topo, engine_factory):
    engine = engine_factory(topo.host)
    sh('sh', '-c', 'echo 1 > /proc/sys/net/ipv4/conf/up0/forwarding', ns=topo.host)
    engine.run(name='br0', addresses=['10.77.0.1/24'], nat=True)
    engine.run(name='br0', state='absent')
    assert _fwd(topo.host, 'up0') == '1'


def test_switching_uplink(topo, engine_factory):
    engine = engine_factory(topo.host)
    sh('ip', 'link', 'add', 'up1', 'type', 'veth', 'peer', 'name', 'up1p', ns=topo.host)
    engine.run(name='br0', addresses=['10.77.0.1/24'], nat=True, uplink='up0')
    check = engine.run(check=True, name='br0', nat=True, uplink='up1')
    assert check['changed'] is True
    assert check['diff']['before']['uplink'] == 'up0' and check['diff']['after']['uplink'] == 'up1'
    assert _fwd(topo.host, 'up1') == '0'
    res = engine.run(name='br0', nat=True, uplink='up1')
    assert res['network']['uplink'] == 'up1'
    assert _fwd(topo.host, 'up0') == '0' and _fwd(topo.host, 'up1') == '1' and _fwd(topo.host, 'br0') == '1'
    rules = our_table(topo.host)['br0-nat']['rules']
    assert {_match(r['expr'], 'oifname') for r in rules} == {'up1'}
    # nat omitted: NAT stays as it is (not managed)
    assert engine.run(name='br0')['network']['nat'] is True


def test_missing_nft(netns, engine_factory, tmp_path):
    """Without nft a plain bridge still works; NAT fails with the missing-library error."""
    engine = engine_factory(netns, nft_binary=str(tmp_path / 'no-such-nft'))
    assert engine.run(name='br0', addresses=['10.9.0.1/24'])['changed'] is True
    with pytest.raises(MissingDependency) as info:
        engine.run(name='br0', nat=True, uplink='lo')
    assert info.value.library == 'nft'
    assert our_table(netns) is None


def test_check_mode_predicts_firewall_changes_exactly(topo, engine_factory):
    engine = engine_factory(topo.host)
    params = dict(name='br0', addresses=[topo.GATEWAY, 'fd00:77::1/64'], mtu=1450, nat=True, isolation=True,
                  egress={'default': 'drop', 'allow': [{'dest': '192.0.2.0/24', 'proto': 'tcp', 'ports': [22]}]})
    before = sh('ip', '-j', '-d', 'addr', ns=topo.host).stdout
    check = engine.run(check=True, **params)
    assert check['changed'] is True
    assert sh('ip', '-j', '-d', 'addr', ns=topo.host).stdout == before
    assert our_table(topo.host) is None and _fwd(topo.host, 'up0') == '0'
    real = engine.run(**params)
    assert real['diff'] == check['diff']
    assert dict(real['network'], ifindex=None) == check['network']
    # and the other way round: predicting the removal
    check = engine.run(check=True, name='br0', state='absent')
    assert our_table(topo.host) is not None and _fwd(topo.host, 'up0') == '1'
    real = engine.run(name='br0', state='absent')
    assert real['diff'] == check['diff'] and real['network'] == check['network']
    assert _fwd(topo.host, 'up0') == '0'
