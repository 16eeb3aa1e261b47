"""ch_network's dhcp option and the dnsmasq it runs, as pure logic: validation against the
bridge, the configuration text, the VMs' hosts files, the plan's DHCP steps, the lease file."""
import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils import dhcp
from ansible_collections.cloudhv.ch.plugins.module_utils import firewall as fw
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import OptionError
from ansible_collections.cloudhv.ch.plugins.module_utils.network import plan
from ansible_collections.cloudhv.ch.plugins.module_utils.network_options import desired_from_params

PATHS = {'leases': '/s/dhcp/br0.leases', 'hosts': '/r/dhcp/br0/hosts', 'names': '/r/dhcp/br0/names'}
MAC = '02:00:00:00:00:05'


def settings(addresses=('10.77.0.1/24',), nat=False, **opts):
    return dhcp.check_against_bridge(dhcp.normalize_dhcp(opts), list(addresses), nat, 'br0')


@pytest.mark.parametrize('opts, addresses, option, words', [
    ({'ranges': ['10.78.0.10-10.78.0.20']}, ['10.77.0.1/24'], 'dhcp.ranges[0]', 'not inside the subnet'),
    ({'ranges': ['10.77.0.250-10.78.0.5']}, ['10.77.0.1/24'], 'dhcp.ranges[0]', 'not inside the subnet'),
    ({'ranges': ['10.77.0.1-10.77.0.20']}, ['10.77.0.1/24'], 'dhcp.ranges[0]', "bridge's own address 10.77.0.1"),
    ({'ranges': ['10.77.0.0-10.77.0.20']}, ['10.77.0.1/24'], 'dhcp.ranges[0]', 'network or broadcast'),
    ({'ranges': ['10.77.0.20-10.77.0.10']}, ['10.77.0.1/24'], 'dhcp.ranges[0]', 'starts after it ends'),
    ({'ranges': ['10.77.0.20']}, ['10.77.0.1/24'], 'dhcp.ranges[0]', "'start-end'"),
    ({'ranges': ['10.77.0.x-10.77.0.9']}, ['10.77.0.1/24'], 'dhcp.ranges[0]', 'not an IPv4 address'),
    ({'lease_time': 'soon'}, ['10.77.0.1/24'], 'dhcp.lease_time', 'not a lease time'),
    ({'lease_time': '1m'}, ['10.77.0.1/24'], 'dhcp.lease_time', 'two minutes'),
    ({'domain': 'bad domain'}, ['10.77.0.1/24'], 'dhcp.domain', 'not a DNS domain'),
    ({'router': '10.9.9.9'}, ['10.77.0.1/24'], 'dhcp.router', 'not inside the subnet'),
    ({'dns_servers': ['1.1.1.1', 'x']}, ['10.77.0.1/24'], 'dhcp.dns_servers[1]', 'not an IPv4 address'),
    ({}, ['fd00::1/64'], 'dhcp', 'no IPv4 address'),
    ({}, [], 'dhcp', 'no IPv4 address'),
])
def test_bad_dhcp_options_name_the_option(opts, addresses, option, words):
    with pytest.raises(OptionError) as err:
        settings(addresses, **opts)
    assert err.value.option == option and words in str(err.value), str(err.value)


@pytest.mark.parametrize('value, normal', [(None, '1h'), ('30m', '30m'), ('12h', '12h'), ('infinite', 'infinite'),
                                           ('INFINITE', 'infinite'), ('3600', '3600'), ('7d', '7d'), ('2w', '2w')])
def test_lease_times(value, normal):
    assert dhcp.parse_lease_time(value) == normal


def test_router_defaults_to_the_bridge_with_nat_and_to_none_without():
    assert settings(nat=True)['router'] == '10.77.0.1'
    assert settings(('10.77.0.1/24', '10.78.0.1/24'), nat=True)['routers'] == {'10.77.0.0/24': '10.77.0.1',
                                                                               '10.78.0.0/24': '10.78.0.1'}
    assert settings(nat=False)['router'] is None and settings(nat=False)['routers'] == {}
    assert settings(nat=False, router='10.77.0.254')['routers'] == {'10.77.0.0/24': '10.77.0.254'}


def test_config_text():
    wanted = settings(('10.77.0.1/24', '10.78.0.1/24', 'fd00:77::1/64'), nat=True, ranges=['10.77.0.100-10.77.0.199'],
                      lease_time='12h', domain='Lab.Test.', dns_servers=['192.0.2.53'])
    conf = dhcp.render_config('br0', wanted, PATHS)
    lines = conf.splitlines()
    for want in ('interface=br0', 'except-interface=lo', 'bind-dynamic', 'dhcp-leasefile=/s/dhcp/br0.leases',
                 'dhcp-hostsdir=/r/dhcp/br0/hosts', 'hostsdir=/r/dhcp/br0/names',
                 'dhcp-range=set:net0,10.77.0.100,10.77.0.199,255.255.255.0,12h',
                 'dhcp-range=set:net1,10.78.0.0,static,255.255.255.0,12h',      # static leases in the second subnet
                 # with NAT, each subnet's clients get the bridge's address in it as router
                 'dhcp-option=tag:net0,option:router,10.77.0.1', 'dhcp-option=tag:net1,option:router,10.78.0.1',
                 'dhcp-option=option:dns-server,192.0.2.53',
                 'domain=lab.test', 'local=/lab.test/', 'expand-hosts', 'enable-ra',
                 'dhcp-range=::,constructor:br0,ra-only,64,12h'):
        assert want in lines, (want, conf)
    assert 'port=0' not in lines
    quiet = dhcp.render_config('br0', settings(dns=False), PATHS).splitlines()
    assert 'port=0' in quiet and 'dhcp-option=tag:net0,option:router' in quiet and 'enable-ra' not in quiet
    chosen = dhcp.render_config('br0', settings(('10.77.0.1/24', '10.78.0.1/24'), nat=True, router='10.78.0.254'),
                                PATHS).splitlines()
    assert 'dhcp-option=tag:net1,option:router,10.78.0.254' in chosen and 'dhcp-option=tag:net0,option:router' in chosen


def test_nic_files_and_changes():
    nets = [{'bridge': 'br0', 'mac': MAC, 'address': '10.77.0.50'}, {'bridge': 'br1', 'mac': '02:00:00:00:00:06'},
            {'bridge': 'br0', 'mac': '02:00:00:00:00:07'}, {'bridge': None, 'user_tap': 't0', 'mac': '02:00:00:00:00:08'}]
    files = dhcp.nic_files('web1', nets, 'br0')
    assert files == {'web1.0': ('%s,10.77.0.50,web1\n' % MAC, '10.77.0.50 web1\n'),
                     'web1.2': ('02:00:00:00:00:07,web1\n', None)}
    current = {'web1.0': files['web1.0'], 'web1.5': ('x', None), 'web10.0': ('y', None)}
    assert dhcp.nic_changes(current, files, prefix='web1.') == {'web1.2': files['web1.2'], 'web1.5': None}


def test_read_leases(tmp_path):
    path = tmp_path / 'br0.leases'
    path.write_text('1796404275 02:00:00:00:00:05 10.77.0.50 web1 01:02:00:00:00:00:05\n'
                    '0 02:00:00:00:00:09 10.77.0.9 * *\n'
                    'duid 00:01:00:01:2c:aa\n'
                    '1796404275 1234 fd00:77::5 web1 00:01\n')
    assert dhcp.read_leases(str(path)) == [
        {'mac': '02:00:00:00:00:09', 'ip': '10.77.0.9', 'hostname': None, 'expiry': 0},
        {'mac': MAC, 'ip': '10.77.0.50', 'hostname': 'web1', 'expiry': 1796404275}]
    assert dhcp.read_leases(str(tmp_path / 'missing')) == []


def _desired(**params):
    base = dict(name='br0', state='present', netns=None, addresses=['10.77.0.1/24'], mtu=None, nat=None,
                uplink=None, isolation=None, egress=None, prune_taps=False, force=False, dhcp=None)
    base.update(params)
    return desired_from_params(base)


def _actual(dhcp_now):
    link = {'name': 'br0', 'ifindex': 5, 'kind': 'bridge', 'mtu': 1500, 'up': True, 'carrier': False, 'master': None}
    return {'link': link, 'addresses': ['10.77.0.1/24'], 'ports': [], 'link_names': ['lo', 'br0'],
            'default_uplink': None, 'forwarding': {'br0': 0}, 'default_forwarding': 0, 'table': None,
            'taps': [], 'owners': {}, 'running': {}, 'fw': fw.decode_bridge(fw.bridge_part(None, 'br0'), 'br0'), 'other_uplinks': {},
            'dhcp': dict({'paths': PATHS, 'files': {}, 'wanted': {}}, **dhcp_now)}


def test_plan_starts_restarts_only_on_a_config_change_and_removes():
    want = _desired(dhcp={'ranges': ['10.77.0.100-10.77.0.199']})
    first = plan(want, _actual({}))
    assert [s[0] for s in first['steps']] == ['dhcp_write', 'dhcp_start']
    assert first['before']['dhcp'] is None and first['after']['dhcp']['running'] is True
    conf, stored = first['steps'][0][2], first['steps'][0][3]
    running = {'config': conf, 'settings': stored, 'pid': 42, 'exists': True}
    assert plan(want, _actual(running))['steps'] == []
    # dead: started again, nothing rewritten
    assert [s[0] for s in plan(want, _actual(dict(running, pid=None)))['steps']] == ['dhcp_start']
    # a VM's hosts file: written, no restart
    files = {'web1.0': ('%s,10.77.0.50,web1\n' % MAC, '10.77.0.50 web1\n')}
    steps = plan(want, _actual(dict(running, wanted=files)))['steps']
    assert steps == [('dhcp_hosts', 'br0', files)]
    # another lease time: stop, rewrite, start
    longer = _desired(dhcp={'ranges': ['10.77.0.100-10.77.0.199'], 'lease_time': '12h'})
    assert [s[0] for s in plan(longer, _actual(running))['steps']] == ['dhcp_stop', 'dhcp_write', 'dhcp_start']
    # dhcp left out: the server goes
    gone = plan(_desired(), _actual(running))
    assert gone['steps'] == [('dhcp_remove', 'br0')] and gone['after']['dhcp'] is None
    assert plan(_desired(), _actual({'exists': False}))['steps'] == []
    assert ('dhcp_remove', 'br0') in plan(_desired(state='absent'), _actual(running))['steps']
