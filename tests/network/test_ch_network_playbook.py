"""ch_network as users run it (ansible-playbook), shaped like community.docker's docker_volume
integration target: create, again, check mode before/after, change, absent, absent again. Host
state between tasks is probed with iproute2 from inside the playbook."""
import json

from tests.support.ansible import run_adhoc, run_playbook

from tests.network.netutil import addrs, links, nft_json, our_table, sh

MODULE = 'cloudhv.ch.ch_network'


def _probe(netns, name):
    return {'name': name, 'ansible.builtin.command': 'ip netns exec %s ip -j -d link show br0' % netns,
            'register': name.replace(' ', '_'), 'failed_when': False, 'changed_when': False}


def _net(netns, title, check=False, **args):
    args.setdefault('name', 'br0')
    args['netns'] = netns
    task = {'name': title, MODULE: args, 'diff': True}
    if check:
        task['check_mode'] = True
    return task


def _ip_link(res, name):
    out = res.task(name)
    return json.loads(out['stdout'])[0] if out['rc'] == 0 else None


def test_ch_network_playbook(tmp_path, netns):
    first = ['10.77.0.1/24', 'fd00:77::1/64']
    second = ['10.88.0.1/24', 'fd00:88::1/64']
    tasks = [
        _net(netns, 'create check', check=True, addresses=first),
        _probe(netns, 'probe after create check'),
        _net(netns, 'create', addresses=first),
        _net(netns, 'create again', addresses=first),
        _net(netns, 'create again check', check=True, addresses=first),
        _net(netns, 'change check', check=True, addresses=second, mtu=1400),
        _probe(netns, 'probe after change check'),
        {'name': 'addresses after change check', 'ansible.builtin.command': 'ip netns exec %s ip -j addr show dev br0' % netns,
         'register': 'addr_check', 'changed_when': False},
        _net(netns, 'change', addresses=second, mtu=1400),
        _net(netns, 'change again', addresses=second, mtu=1400),
        _net(netns, 'unmanaged addresses and mtu'),
        _net(netns, 'remove all addresses', addresses=[]),
        _net(netns, 'absent check', check=True, state='absent'),
        _probe(netns, 'probe after absent check'),
        _net(netns, 'absent', state='absent'),
        _net(netns, 'absent again', state='absent'),
        _probe(netns, 'probe after absent'),
    ]
    play_extra = {'module_defaults': {'group/cloudhv.ch.ch': {'state_dir': str(tmp_path / 'state'),
                                                              'run_dir': str(tmp_path / 'run')}}}
    res = run_playbook(tmp_path, tasks=tasks, diff=True, play_extra=play_extra)
    assert res.rc == 0, res

    # create in check mode: predicted, nothing done
    check = res.task('create check')
    assert check['changed'] is True
    assert check['network']['ifindex'] is None
    assert check['diff']['before']['state'] == 'absent'
    assert check['diff']['after']['state'] == 'present'
    assert _ip_link(res, 'probe after create check') is None

    # create: the prediction was exact
    created = res.task('create')
    assert created['changed'] is True
    assert created['diff'] == check['diff']
    assert dict(created['network'], ifindex=None) == check['network']
    net = created['network']
    assert net['name'] == 'br0' and net['state'] == 'present'
    assert net['addresses'] == first
    assert net['mtu'] == 1500 and isinstance(net['ifindex'], int)
    assert net['nat'] is False and net['isolation'] is False
    assert net['egress'] == {'default': 'accept', 'allow': []}
    assert net['taps'] == [] and net['pruned'] == []

    for title in ('create again', 'create again check'):
        again = res.task(title)
        assert again['changed'] is False, title
        assert again['diff']['before'] == again['diff']['after']
        assert again['network'] == net

    # change in check mode: predicted, nothing done
    change_check = res.task('change check')
    assert change_check['changed'] is True
    assert change_check['diff']['before']['addresses'] == first
    assert change_check['diff']['after']['addresses'] == second
    assert change_check['diff']['before']['mtu'] == 1500
    assert change_check['diff']['after']['mtu'] == 1400
    assert _ip_link(res, 'probe after change check')['mtu'] == 1500
    seen = json.loads(res.task('addresses after change check')['stdout'])[0]['addr_info']
    assert sorted(a['local'] for a in seen if not a['local'].startswith('fe80')) == ['10.77.0.1', 'fd00:77::1']

    changed = res.task('change')
    assert changed['changed'] is True
    assert changed['diff'] == change_check['diff']
    assert changed['network']['addresses'] == second and changed['network']['mtu'] == 1400
    assert changed['network']['ifindex'] == net['ifindex']      # updated in place, not recreated
    assert res.task('change again')['changed'] is False

    unmanaged = res.task('unmanaged addresses and mtu')
    assert unmanaged['changed'] is False
    assert unmanaged['network']['addresses'] == second and unmanaged['network']['mtu'] == 1400

    removed = res.task('remove all addresses')
    assert removed['changed'] is True and removed['network']['addresses'] == []

    absent_check = res.task('absent check')
    assert absent_check['changed'] is True
    assert absent_check['network']['state'] == 'absent'
    assert _ip_link(res, 'probe after absent check') is not None

    absent = res.task('absent')
    assert absent['changed'] is True
    assert absent['network'] == dict(absent_check['network'])
    assert absent['network']['ifindex'] is None and absent['network']['addresses'] == []
    assert res.task('absent again')['changed'] is False
    assert _ip_link(res, 'probe after absent') is None
    assert 'br0' not in links(netns)
    # the table is gone with the last chain; nothing of ours remains
    assert our_table(netns) is None


def test_adhoc_idempotent_with_firewall(tmp_path, topo):
    """Ad hoc runs with NAT, isolation and egress: the second run is not changed."""
    args = {'name': 'br0', 'netns': topo.host, 'addresses': ['10.77.0.1/24'], 'nat': True, 'isolation': True,
            'egress': {'default': 'drop', 'allow': [{'dest': '192.0.2.0/24', 'proto': 'tcp', 'ports': [443, 80]},
                                                    {'dest': '::/0', 'proto': 'icmp'}]},
            'state_dir': str(tmp_path / 'state'), 'run_dir': str(tmp_path / 'run')}
    first = run_adhoc(tmp_path, MODULE, args)
    assert first.rc == 0, first
    assert first.result['changed'] is True
    assert first.result['network']['egress'] == {
        'default': 'drop', 'allow': [{'dest': '192.0.2.0/24', 'proto': 'tcp', 'ports': [80, 443]},
                                     {'dest': '::/0', 'proto': 'icmp', 'ports': []}]}
    second = run_adhoc(tmp_path, MODULE, args, check=True, diff=True)
    assert second.rc == 0 and second.result['changed'] is False, second
    third = run_adhoc(tmp_path, MODULE, args)
    assert third.rc == 0 and third.result['changed'] is False, third
    assert third.result['network'] == first.result['network']


def test_bad_input_changes_nothing(tmp_path, netns, namespaces):
    sh('ip', 'link', 'add', 'keep0', 'type', 'veth', 'peer', 'name', 'keep1', ns=netns)
    before_links = sorted(links(netns))
    before_rules = nft_json(netns, 'ruleset')

    def bad(title, **args):
        task = _net(netns, title, **args)
        task['ignore_errors'] = True
        return task
    tasks = [
        bad('sixteen characters', name='abcdefghijklmnop', addresses=['10.1.0.1/24']),
        bad('slash in name', name='br/0'),
        bad('bad CIDR', addresses=['10.0.0.300/24']),
        bad('no prefix', addresses=['10.0.0.1']),
        bad('not an address', addresses=['gateway']),
        bad('unknown uplink', addresses=['10.1.0.1/24'], nat=True, uplink='nosuch0'),
        bad('nat without default route', addresses=['10.1.0.1/24'], nat=True),
        bad('egress dest with host bits', egress={'default': 'drop', 'allow': [{'dest': '10.0.0.1/8'}]}),
        bad('icmp with ports', egress={'default': 'drop', 'allow': [{'dest': '10.0.0.0/8', 'proto': 'icmp', 'ports': [1]}]}),
        bad('missing netns', addresses=['10.1.0.1/24']),
    ]
    tasks[-1][MODULE]['netns'] = netns + '-missing'
    res = run_playbook(tmp_path, tasks=tasks)
    expect = {
        'sixteen characters': ('name:', 'at most 15'),
        'slash in name': ('name:', "no '/'"),
        'bad CIDR': ('addresses:', '10.0.0.300/24'),
        'no prefix': ('addresses:', 'not a CIDR address'),
        'not an address': ('addresses:', 'gateway'),
        'unknown uplink': ('uplink:', 'nosuch0'),
        'nat without default route': ('uplink:', 'no default route'),
        'egress dest with host bits': ('egress.allow[0].dest:', 'host bits'),
        'icmp with ports': ('egress.allow[0].ports:', 'tcp or udp'),
        'missing netns': ('netns:', netns + '-missing'),
    }
    status = dict((r['task'], r['status']) for r in res.results)
    for title, words in expect.items():
        out = res.task(title)
        assert status[title] == 'failed', (title, out)
        for word in words:
            assert word in out['msg'], (title, out['msg'])
    assert sorted(links(netns)) == before_links
    assert nft_json(netns, 'ruleset') == before_rules
    assert our_table(netns) is None


def test_absent_while_in_use_refused(tmp_path, netns, namespaces, engine_factory):
    """A tap held open by a process (as a running VMM does) blocks absent; force removes."""
    engine = engine_factory(netns)
    engine.run(name='br0', addresses=['10.5.0.1/24'], isolation=True)
    from ansible_collections.cloudhv.ch.plugins.module_utils.netlink import Netlink
    with Netlink(netns) as nl:
        nl.ensure_tap('chv0123456789ab', 'br0')
    holder = namespaces.spawn(netns, 'python3', '-c',
                              'import fcntl,os,struct,time\n'
                              'fd=os.open("/dev/net/tun",os.O_RDWR)\n'
                              'fcntl.ioctl(fd,0x400454ca,struct.pack("16sH22x",b"chv0123456789ab",0x5002))\n'
                              'print("open",flush=True)\ntime.sleep(600)')
    assert holder.stdout.readline().strip() == 'open'
    res = run_adhoc(tmp_path, MODULE, {'name': 'br0', 'netns': netns, 'state': 'absent',
                                       'state_dir': engine.state_dir, 'run_dir': engine.run_dir})
    assert res.results[-1]['status'] == 'failed'
    assert 'in use' in res.result['msg'] and 'chv0123456789ab' in res.result['msg'], res.result
    assert res.result['busy_taps'] == ['chv0123456789ab']
    assert 'br0' in links(netns) and addrs(netns, 'br0') == ['10.5.0.1/24']
    assert our_table(netns) is not None
    forced = run_adhoc(tmp_path, MODULE, {'name': 'br0', 'netns': netns, 'state': 'absent', 'force': True,
                                          'state_dir': engine.state_dir, 'run_dir': engine.run_dir})
    assert forced.result['changed'] is True, forced
    assert 'br0' not in links(netns)
    assert our_table(netns) is None
    assert 'chv0123456789ab' in links(netns)       # the tap itself is the VM's business


def test_missing_pyroute2_reported_like_missing_required_lib(tmp_path, netns):
    fake = tmp_path / 'fakelibs' / 'pyroute2'
    fake.mkdir(parents=True)
    (fake / '__init__.py').write_text('raise ImportError("No module named pyroute2 (test stand-in)")\n')
    res = run_adhoc(tmp_path, MODULE, {'name': 'br0', 'netns': netns, 'state_dir': str(tmp_path / 's'),
                                       'run_dir': str(tmp_path / 'r')},
                    env={'PYTHONPATH': str(tmp_path / 'fakelibs')})
    assert res.results[-1]['status'] == 'failed'
    msg = res.result['msg']
    assert 'Failed to import the required Python library (pyroute2)' in msg, msg
    assert 'br0' not in links(netns)
