"""ch_network's pure logic: option validation, the plan from fake host states (no netlink, no
nft), and the nftables encoding, decoding and transactions."""
import json

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils import firewall as fw
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import HostError, OptionError
from ansible_collections.cloudhv.ch.plugins.module_utils.network import (
    in_use,
    plan,
    prune_candidates,
)
from ansible_collections.cloudhv.ch.plugins.module_utils.network_options import desired_from_params

TAP_A = 'chv0000000000aa'
TAP_B = 'chv0000000000bb'
TAP_C = 'chv0000000000cc'


def desired(**params):
    base = dict(name='br0', state='present', netns=None, addresses=None, mtu=None, nat=None, uplink=None,
                isolation=None, egress=None, prune_taps=False, force=False)
    base.update(params)
    return desired_from_params(base)


def bridge(mtu=1500, up=True):
    return {'name': 'br0', 'ifindex': 5, 'kind': 'bridge', 'mtu': mtu, 'up': up, 'carrier': False, 'master': None}


def tap(name, master='br0', carrier=False):
    return {'name': name, 'ifindex': 9, 'kind': 'tun', 'mtu': 1500, 'up': True, 'carrier': carrier, 'master': master}


def actual(table=None, **over):
    state = {
        'link': None, 'addresses': [], 'ports': [], 'link_names': ['lo', 'eth0', 'eth1'],
        'default_uplink': 'eth0', 'forwarding': {'eth0': 0, 'eth1': 0}, 'default_forwarding': 0,
        'table': table, 'taps': [], 'owners': {}, 'running': {},
    }
    state['fw'] = fw.decode_bridge(fw.bridge_part(table, 'br0'), 'br0')
    state['other_uplinks'] = fw.nat_uplinks(table, exclude_bridge='br0')
    state.update(over)
    if state.get('link') is not None:
        state['forwarding'].setdefault('br0', 0)
    return state


def ops(result):
    return [s[0] for s in result['steps']]


# --- options ------------------------------------------------------------------------------------

@pytest.mark.parametrize('params, option, words', [
    ({'name': 'abcdefghijklmnop'}, 'name', 'at most 15'),
    ({'name': 'br 0'}, 'name', 'not a valid interface name'),
    ({'name': 'br:0'}, 'name', 'not a valid interface name'),
    ({'name': 'br/0'}, 'name', 'not a valid interface name'),
    ({'name': ''}, 'name', 'required'),
    ({'addresses': ['10.0.0.1']}, 'addresses', 'not a CIDR address'),
    ({'addresses': ['10.0.0.256/24']}, 'addresses', 'not a valid CIDR address'),
    ({'addresses': ['10.0.0.1/33']}, 'addresses', 'not a valid CIDR address'),
    ({'addresses': ['10.0.0.0/24']}, 'addresses', 'network address'),
    ({'mtu': 67}, 'mtu', 'out of range'),
    ({'mtu': 1000, 'addresses': ['fd00::1/64']}, 'mtu', '1280'),
    ({'uplink': 'br0'}, 'uplink', 'bridge itself'),
    ({'uplink': 'an-uplink-too-long'}, 'uplink', 'at most 15'),
    ({'netns': 'a/b'}, 'netns', 'not a valid'),
    ({'egress': {'default': 'reject'}}, 'egress.default', 'accept, drop'),
    ({'egress': {'default': 'drop', 'allow': [{'dest': '10.0.0.1/8'}]}}, 'egress.allow[0].dest', 'host bits'),
    ({'egress': {'default': 'drop', 'allow': [{'dest': 'anywhere'}]}}, 'egress.allow[0].dest', 'not a valid'),
    ({'egress': {'default': 'drop', 'allow': [{'proto': 'tcp'}]}}, 'egress.allow[0].dest', 'required'),
    ({'egress': {'default': 'drop', 'allow': [{'dest': '::/0', 'proto': 'sctp'}]}}, 'egress.allow[0].proto', 'tcp'),
    ({'egress': {'default': 'drop', 'allow': [{'dest': '::/0', 'ports': [53]}]}}, 'egress.allow[0].ports', 'tcp or udp'),
    ({'egress': {'default': 'drop', 'allow': [{'dest': '::/0', 'proto': 'icmp', 'ports': [1]}]}},
     'egress.allow[0].ports', 'tcp or udp'),
    ({'egress': {'default': 'drop', 'allow': [{'dest': '::/0', 'proto': 'tcp', 'ports': [70000]}]}},
     'egress.allow[0].ports', '1-65535'),
    ({'egress': {'default': 'drop', 'allow': [{'dest': '::/0', 'proto': 'tcp', 'ports': ['9000-8000']}]}},
     'egress.allow[0].ports', 'ends before it starts'),
    ({'egress': {'default': 'drop', 'allow': [{'dest': '::/0', 'proto': 'tcp', 'ports': ['80-x']}]}},
     'egress.allow[0].ports', "range ('8000-8100')"),
    ({'egress': {'default': 'drop', 'allow': [{'dest': '::/0', 'proto': 'tcp', 'ports': [True]}]}},
     'egress.allow[0].ports', 'not a port number'),
])
def test_bad_options(params, option, words):
    with pytest.raises(OptionError) as info:
        desired(**params)
    assert info.value.option == option
    assert words in info.value.msg


def test_options_are_normalized():
    want = desired(addresses=['FD00:0:0::1/64', '10.1.0.1/24', '10.1.0.1/24'],
                   egress={'default': 'drop', 'allow': [{'dest': '10.0.0.0/8', 'proto': 'tcp', 'ports': [443, '80', 443]}]})
    assert want['addresses'] == ['10.1.0.1/24', 'fd00::1/64']
    assert want['egress'] == {'default': 'drop', 'allow': [{'dest': '10.0.0.0/8', 'proto': 'tcp', 'ports': [80, 443]}]}
    # with default accept an allow-list is meaningless: no rules
    assert desired(egress={'default': 'accept', 'allow': [{'dest': '10.0.0.0/8'}]})['egress'] == \
        {'default': 'accept', 'allow': []}


# --- the plan -----------------------------------------------------------------------------------

def test_new_bridge():
    result = plan(desired(addresses=['10.1.0.1/24'], mtu=1400), actual())
    assert result['steps'] == [('create_bridge', 'br0', 1400), ('add_address', 'br0', '10.1.0.1/24'),
                               ('set_up', 'br0')]
    assert result['before']['state'] == 'absent'
    assert result['after'] == {'state': 'present', 'addresses': ['10.1.0.1/24'], 'mtu': 1400, 'nat': False,
                               'uplink': None, 'isolation': False, 'egress': {'default': 'accept', 'allow': []},
                               'taps': [], 'dhcp': None}


def test_matching_bridge_has_no_steps():
    result = plan(desired(addresses=['10.1.0.1/24'], mtu=1500),
                  actual(link=bridge(), addresses=['10.1.0.1/24', 'fe80::1/64']))
    assert result['changed'] is False and result['steps'] == []
    assert result['before'] == result['after']


def test_addresses_replace_but_link_local_stays():
    result = plan(desired(addresses=['10.2.0.1/24']),
                  actual(link=bridge(), addresses=['10.1.0.1/24', 'fd00::1/64', 'fe80::1/64']))
    assert result['steps'] == [('del_address', 'br0', '10.1.0.1/24'), ('del_address', 'br0', 'fd00::1/64'),
                               ('add_address', 'br0', '10.2.0.1/24')]
    assert result['before']['addresses'] == ['10.1.0.1/24', 'fd00::1/64']


def test_not_a_bridge_is_refused():
    veth = dict(bridge(), kind='veth')
    for state in ('present', 'absent'):
        with pytest.raises(HostError) as info:
            plan(desired(state=state), actual(link=veth))
        assert 'not a bridge' in info.value.msg


def _installed(settings, name='br0', extra=None):
    """A parsed table as nft would list it after installing ``settings`` for ``name``."""
    chains = fw.bridge_chains(name, settings)
    chains.update(extra or {})
    return chains


def test_nat_on_installs_rules_before_forwarding():
    result = plan(desired(addresses=['10.1.0.1/24'], nat=True), actual(link=bridge(), addresses=['10.1.0.1/24']))
    assert ops(result) == ['nft', 'set_forwarding', 'set_forwarding']
    assert result['steps'][1:] == [('set_forwarding', 'br0', 1), ('set_forwarding', 'eth0', 1)]
    nat = result['chains']['br0-nat']
    assert nat['rules'][0]['comment'] == fw.nat_marker('br0', 'eth0', 0, 0)
    assert result['after']['uplink'] == 'eth0'


def test_nat_off_restores_forwarding_before_removing_rules():
    settings = {'nat': True, 'uplink': 'eth0', 'subnets': ['10.1.0.0/24'], 'uplink_forwarding': 0,
                'bridge_forwarding': 0}
    state = actual(table=_installed(settings), link=bridge(), addresses=['10.1.0.1/24'],
                   forwarding={'br0': 1, 'eth0': 1})
    result = plan(desired(nat=False), state)
    assert result['steps'][:2] == [('set_forwarding', 'eth0', 0), ('set_forwarding', 'br0', 0)]
    assert ops(result)[2] == 'nft'
    # the table is deleted with its last chain
    assert result['steps'][2][1][-1] == {'delete': {'table': {'family': 'inet', 'name': 'cloudhv'}}}


def test_shared_uplink_is_not_restored_and_original_is_inherited():
    other = _installed({'nat': True, 'uplink': 'eth0', 'subnets': [], 'uplink_forwarding': 0,
                        'bridge_forwarding': 0}, name='br9')
    state = actual(table=other, link=bridge(), forwarding={'br0': 0, 'eth0': 1})
    result = plan(desired(nat=True), state)
    # eth0 is 1 now only because br9 set it: br0 records the real original, 0
    assert result['chains']['br0-nat']['rules'][0]['comment'] == fw.nat_marker('br0', 'eth0', 0, 0)
    assert ('set_forwarding', 'eth0', 1) not in result['steps']
    commands = result['steps'][0][1]
    assert 'br9' not in json.dumps(commands)          # other bridges' chains are never named
    both = dict(other, **result['chains'])
    state = actual(table=both, link=bridge(), forwarding={'br0': 1, 'eth0': 1})
    result = plan(desired(state='absent'), state)
    assert ('set_forwarding', 'eth0', 0) not in result['steps']
    assert {'delete': {'table': {'family': 'inet', 'name': 'cloudhv'}}} not in result['steps'][-1][1]


def test_unmanaged_options_keep_what_is_installed():
    settings = {'nat': True, 'uplink': 'eth1', 'subnets': ['10.1.0.0/24'], 'uplink_forwarding': 0, 'bridge_forwarding': 0,
                'isolation': True, 'egress': {'default': 'drop', 'allow': [{'dest': '10.0.0.0/8', 'proto': 'udp', 'ports': [53]}]}}
    state = actual(table=_installed(settings), link=bridge(), addresses=['10.1.0.1/24'],
                   forwarding={'br0': 1, 'eth0': 0, 'eth1': 1}, default_uplink='eth1')
    result = plan(desired(prune_taps=True), state)
    assert result['changed'] is False
    assert result['after']['egress'] == settings['egress'] and result['after']['isolation'] is True


def test_uplink_resolution():
    with pytest.raises(OptionError) as info:
        plan(desired(nat=True, uplink='nosuch0'), actual())
    assert info.value.option == 'uplink'
    with pytest.raises(OptionError) as info:
        plan(desired(nat=True), actual(default_uplink=None))
    assert 'no default route' in info.value.msg


def test_absent_refused_while_in_use_unless_forced():
    state = actual(link=bridge(), ports=[tap(TAP_A), tap(TAP_B, carrier=True), tap(TAP_C)],
                   owners={TAP_A: 'web1', TAP_C: 'old'}, running={'web1': True, 'old': False})
    with pytest.raises(HostError) as info:
        plan(desired(state='absent'), state)
    assert info.value.details['busy_taps'] == [TAP_A, TAP_B]
    result = plan(desired(state='absent', force=True), state)
    assert result['steps'] == [('delete_bridge', 'br0')]
    assert result['after']['state'] == 'absent'


def test_absent_of_nothing_is_not_changed():
    assert plan(desired(state='absent'), actual())['changed'] is False


def test_prune_candidates():
    taps = [tap(TAP_A), tap(TAP_B, master=None), tap(TAP_C, master='br1'), tap('chv0000000000dd', carrier=True),
            tap('tap0'), dict(tap('chv0000000000ee'), kind='veth'), tap('chv0000000000ff')]
    owners = {TAP_A: 'stopped', TAP_C: 'stopped', 'chv0000000000ff': 'running'}
    running = {'stopped': False, 'running': True}
    assert prune_candidates('br0', taps, owners, running) == [TAP_A, TAP_B]
    assert prune_candidates('br1', taps, owners, running) == [TAP_B, TAP_C]
    assert in_use('br0', taps, owners, running) == [('chv0000000000dd', None), ('chv0000000000ff', 'running')]


# --- nftables encoding ----------------------------------------------------------------------------

SETTINGS = [
    {'nat': False, 'isolation': True, 'egress': {'default': 'accept', 'allow': []}},
    {'nat': True, 'uplink': 'eth0', 'subnets': ['10.1.0.0/24', 'fd00::/64'], 'uplink_forwarding': 1,
     'bridge_forwarding': 0, 'isolation': False,
     'egress': {'default': 'drop', 'allow': [
         {'dest': '10.0.0.0/8', 'proto': 'tcp', 'ports': [80, 443]},
         {'dest': '192.0.2.7/32', 'proto': 'udp', 'ports': [53]},
         {'dest': '2001:db8::/32', 'proto': 'tcp', 'ports': []},
         {'dest': '::/0', 'proto': 'icmp', 'ports': []},
         {'dest': '0.0.0.0/0', 'proto': None, 'ports': []}]}},
]


@pytest.mark.parametrize('settings', SETTINGS)
def test_encode_decode_roundtrip(settings):
    chains = fw.bridge_chains('br0', settings)
    decoded = fw.decode_bridge(chains, 'br0')
    for key, value in settings.items():
        assert decoded[key] == value, key
    assert fw.transaction('br0', chains, chains) == []


def test_listing_is_compared_canonically():
    """nft lists counters with values and sets in its own order: still equal."""
    settings = SETTINGS[1]
    chains = fw.bridge_chains('br0', settings)
    items = [{'metainfo': {'version': '1.0.6'}}, {'table': {'family': 'inet', 'name': 'cloudhv', 'handle': 1}}]
    for name, chain in chains.items():
        props = dict(chain['props'], family='inet', table='cloudhv', name=name, handle=3)
        items.append({'chain': props})
        for rule in chain['rules']:
            expr = json.loads(json.dumps(rule['expr']).replace('"counter": null', '"counter": {"packets": 7, "bytes": 420}')
                              .replace('[80, 443]', '[443, 80]'))
            items.append({'rule': {'family': 'inet', 'table': 'cloudhv', 'chain': name, 'handle': 9,
                                   'comment': rule['comment'], 'expr': expr}})
    listed = fw.parse_listing({'nftables': items})
    assert listed == chains
    assert fw.transaction('br0', listed, fw.bridge_chains('br0', settings)) == []


def test_transaction_touches_only_its_bridge():
    mine = fw.bridge_chains('br0', SETTINGS[0])
    theirs = fw.bridge_chains('br1', SETTINGS[1])
    table = dict(mine, **theirs)
    # removing br0 keeps the table (br1 still has chains) and never names br1's chains
    commands = fw.transaction('br0', table, {})
    assert commands == [{'flush': {'chain': {'family': 'inet', 'table': 'cloudhv', 'name': 'br0-fwd'}}},
                        {'delete': {'chain': {'family': 'inet', 'table': 'cloudhv', 'name': 'br0-fwd'}}}]
    # a changed chain of the same type is flushed and refilled, not deleted
    changed = fw.bridge_chains('br0', {'isolation': True, 'egress': {'default': 'drop', 'allow': []}})
    commands = fw.transaction('br0', table, changed)
    kinds = [list(c)[0] + ' ' + list(list(c.values())[0])[0] for c in commands]
    assert kinds[:2] == ['add table', 'flush chain'] and set(kinds[2:]) == {'add rule'}
    assert 'br1' not in json.dumps(commands)
    # a chain whose hook differs (edited by hand) is replaced
    tampered = json.loads(json.dumps(mine))
    tampered['br0-fwd']['props']['prio'] = 5
    commands = fw.transaction('br0', tampered, mine)
    assert [list(c)[0] for c in commands[:4]] == ['add', 'flush', 'delete', 'add']


def test_foreign_rules_do_not_decode_as_allow_entries():
    assert fw.decode_allow([{'match': {'op': '==', 'left': {'payload': {'protocol': 'th', 'field': 'dport'}},
                                       'right': 22}}, {'accept': None}]) is None
    assert fw.decode_allow([{'meta': {'key': 'nftrace', 'value': 1}}]) is None


def test_port_ranges_are_canonical_and_round_trip():
    want = desired(egress={'default': 'drop', 'allow': [
        {'dest': '10.0.0.0/8', 'proto': 'tcp', 'ports': ['8000-8100', 443, '8050-8200', 8201, '22', 80, 81]}]})
    ports = want['egress']['allow'][0]['ports']
    assert ports == [22, '80-81', 443, '8000-8201']       # adjacent ports merge, like nft's interval sets
    rule = fw.allow_rule('br0', want['egress']['allow'][0])
    [dport] = [e for e in rule['expr'] if 'match' in e and e['match']['left'].get('payload', {}).get('field') == 'dport']
    assert dport['match']['right'] == {'set': [22, {'range': [80, 81]}, 443, {'range': [8000, 8201]}]}
    assert fw.decode_allow(rule['expr']) == want['egress']['allow'][0]
    # a single range is not a set; nft's own listing of an interval set decodes to the same entry
    one = desired(egress={'default': 'drop', 'allow': [{'dest': '::/0', 'proto': 'udp', 'ports': ['5000-5010']}]})
    entry = one['egress']['allow'][0]
    rule = fw.allow_rule('br0', entry)
    assert {'range': [5000, 5010]} in [e['match']['right'] for e in rule['expr'] if 'match' in e]
    assert fw.decode_allow(rule['expr']) == entry
    listed = list(rule['expr'])
    listed[-2] = {'match': {'op': '==', 'left': {'payload': {'protocol': 'udp', 'field': 'dport'}},
                            'right': {'set': [{'range': [5000, 5004]}, {'range': [5005, 5010]}]}}}
    assert fw.decode_allow(listed) == entry
