"""ch_network dhcp with ch_vm networks[].address, through real ansible-playbook runs inside a
network namespace: a real dnsmasq on the bridge, a real DHCP client (busybox udhcpc) in another
namespace attached to the bridge by a veth pair, DNS asked over the wire.

The namespace gets its own /etc/netns/<ns>/resolv.conf (ip netns exec mounts it over
/etc/resolv.conf for ansible, and so for the dnsmasq it starts): the host's resolver for these
tests is a stub on the namespace's loopback that the test starts, so no query leaves it."""
import os
import shutil
import signal
import time

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils.process import proc_cmdline

from tests.network.netutil import DhcpClient, Namespaces, NETTOOL, resolve, sh

NET = 'cloudhv.ch.ch_network'
VM = 'cloudhv.ch.ch_vm'
BRIDGE_IP = '10.77.0.1'
RANGE = '10.77.0.100-10.77.0.120'
STUB_NAME = 'outside.example'
STUB_IP = '192.0.2.77'


@pytest.fixture
def spaces():
    found = Namespaces()
    try:
        yield found
    finally:
        found.cleanup()


@pytest.fixture
def host(hv_ns):
    """hv_ns whose namespace resolves through a stub on its own loopback."""
    directory = '/etc/netns/%s' % hv_ns.netns
    os.makedirs(directory)
    with open(os.path.join(directory, 'resolv.conf'), 'w') as handle:
        handle.write('nameserver 127.0.0.1\n')
    try:
        yield hv_ns
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def dhcp_opts(**over):
    opts = {'ranges': [RANGE], 'domain': 'lab.test', 'router': BRIDGE_IP}
    opts.update(over)
    return opts


def net_task(hv, check=False, **args):
    full = {'name': 'br0', 'addresses': [BRIDGE_IP + '/24']}
    full.update(args)
    res = hv.play([{'name': 'net', NET: full}], check=check)
    out = res.task('net')
    out['_rc'] = res.rc
    return out


def vm_args(hv, **extra):
    args = {'name': 'web1', 'kernel': hv.kernel, 'cmdline': 'console=ttyS0', 'state': 'present'}
    args.update(extra)
    return args


def files(hv):
    """Every path under state_dir and run_dir but the run locks (ch_network takes
    <run_dir>/.network.lock in check mode too: it reads shared state)."""
    return set(f for f in hv.files() if not f.endswith('.lock'))


def converge(run, hv):
    """check mode before (changes nothing), run, run again (unchanged), check mode after."""
    before = files(hv)
    pred = run(check=True)
    assert pred['_rc'] == 0 and pred['changed'] is True, pred
    assert files(hv) == before, 'check mode changed files'
    first = run()
    assert first['_rc'] == 0 and first['changed'] is True, first
    second = run()
    assert second['_rc'] == 0 and second['changed'] is False, second
    after = run(check=True)
    assert after['_rc'] == 0 and after['changed'] is False, after
    return first, second


def dnsmasq_pid(hv):
    try:
        with open(os.path.join(hv.run_dir, 'dhcp', 'br0', 'dnsmasq.pid')) as handle:
            return int(handle.read())
    except (IOError, OSError, ValueError):
        return None


def alive(pid):
    argv = proc_cmdline(pid) if pid else None
    return bool(argv) and os.path.basename(argv[0]) == 'dnsmasq'


def test_static_and_dynamic_leases_and_names(host, spaces):
    hv = host
    first, second = converge(lambda check=False: net_task(hv, check, dhcp=dhcp_opts()), hv)
    server = second['network']['dhcp']
    assert server['ranges'] == [RANGE] and server['router'] == BRIDGE_IP and server['running'] is True
    assert server['pid'] == first['network']['dhcp']['pid'] == dnsmasq_pid(hv) and alive(server['pid'])
    assert server['lease_time'] == '1h' and server['dns'] is True and server['domain'] == 'lab.test'

    vm = converge(lambda check=False: hv.vm(check=check, **vm_args(hv, networks=[
        {'bridge': 'br0', 'address': '10.77.0.50'}, {'bridge': 'br0'}])), hv)[0]
    assert any('DHCP host entries' in c for c in vm['changes']), vm['changes']
    static_mac, dynamic_mac = (n['mac'] for n in vm['vm']['networks'])
    assert vm['vm']['networks'][0]['address'] == '10.77.0.50'
    assert vm['vm']['networks'][0]['address_source'] == 'static'

    # a real DHCP client with the VM's MAC gets exactly its address, the router, DNS and name
    nic = DhcpClient(spaces, hv.netns, 'br0', static_mac, hv.tmp_path)
    lease = nic.lease()
    assert lease is not None, 'no lease for the static MAC'
    assert lease['ip'] == '10.77.0.50' and lease['router'] == BRIDGE_IP and lease['dns'] == BRIDGE_IP
    assert lease['domain'] == 'lab.test' and lease['hostname'] == 'web1' and lease['mask'] == '24'
    # another MAC gets an address from the range
    other = DhcpClient(spaces, hv.netns, 'br0', '02:aa:bb:cc:dd:01', hv.tmp_path).lease()
    assert other is not None and 100 <= int(other['ip'].split('.')[-1]) <= 120, other
    # the VM's second NIC (no address): a dynamic lease, named after the VM, shown by ch_vm_info
    second_nic = DhcpClient(spaces, hv.netns, 'br0', dynamic_mac, hv.tmp_path).lease()
    assert second_nic is not None and second_nic['hostname'] == 'web1' and second_nic['ip'] != '10.77.0.50'
    info = hv.info('web1')[0]['networks']
    assert [(n['address'], n['address_source']) for n in info] == [('10.77.0.50', 'static'),
                                                                   (second_nic['ip'], 'lease')]

    # a VM with one NIC and no address: a dynamic lease whose host name (the VM's) is a DNS name
    web3 = hv.vm(**vm_args(hv, name='web3', networks=[{'bridge': 'br0'}]))
    web3_mac = web3['vm']['networks'][0]['mac']
    web3_lease = DhcpClient(spaces, hv.netns, 'br0', web3_mac, hv.tmp_path).lease()
    assert web3_lease['hostname'] == 'web3' and 100 <= int(web3_lease['ip'].split('.')[-1]) <= 120

    # ch_network reports the leases from the lease file
    leases = net_task(hv, dhcp=dhcp_opts())
    assert leases['changed'] is False
    got = dict((l['mac'], l) for l in leases['network']['dhcp']['leases'])
    assert got[static_mac]['ip'] == '10.77.0.50' and got[dynamic_mac]['ip'] == second_nic['ip']
    assert got['02:aa:bb:cc:dd:01']['ip'] == other['ip'] and got['02:aa:bb:cc:dd:01']['hostname'] is None
    assert got[web3_mac]['ip'] == web3_lease['ip'] and got[web3_mac]['hostname'] == 'web3'
    assert all(l['expiry'] > time.time() for l in got.values())

    # DNS through the bridge, asked from the client's namespace (UDP and TCP); a VM's name has one
    # address: its static one, when it has one
    sh('ip', 'addr', 'add', '10.77.0.50/24', 'dev', 'eth0', ns=nic.ns)
    for proto in ('udp', 'tcp'):
        assert resolve(nic.ns, 'web1.lab.test', BRIDGE_IP, proto) == ['10.77.0.50']
        assert resolve(nic.ns, 'web3.lab.test', BRIDGE_IP, proto) == [web3_lease['ip']]
    assert resolve(nic.ns, 'web1', BRIDGE_IP) == ['10.77.0.50']
    assert resolve(nic.ns, 'nobody.lab.test', BRIDGE_IP) == 'NXDOMAIN'

    # ch_vm absent: the entries, the leases and the names are gone at once
    for name, mac in (('web1', static_mac), ('web3', web3_mac)):
        before = files(hv)
        pred = hv.vm(check=True, **vm_args(hv, name=name, state='absent'))
        assert pred['_rc'] == 0 and any('release its leases' in c for c in pred['changes']), pred
        assert files(hv) == before and resolve(nic.ns, '%s.lab.test' % name, BRIDGE_IP) != 'NXDOMAIN'
        assert mac in [l['mac'] for l in net_task(hv, dhcp=dhcp_opts())['network']['dhcp']['leases']]
        gone = hv.vm(**vm_args(hv, name=name, state='absent'))
        assert gone['_rc'] == 0 and any('release its leases' in c for c in gone['changes']), gone
        assert resolve(nic.ns, '%s.lab.test' % name, BRIDGE_IP) == 'NXDOMAIN'
        assert hv.vm(**vm_args(hv, name=name, state='absent'))['changed'] is False
    assert os.listdir(os.path.join(hv.run_dir, 'dhcp', 'br0', 'hosts')) == []
    macs = [l['mac'] for l in net_task(hv, dhcp=dhcp_opts())['network']['dhcp']['leases']]
    assert static_mac not in macs and dynamic_mac not in macs and web3_mac not in macs
    assert '02:aa:bb:cc:dd:01' in macs


def test_vm_address_changes_and_rebuild_from_records(host, spaces):
    hv = host
    assert net_task(hv, dhcp=dhcp_opts(domain=None))['_rc'] == 0
    vm = converge(lambda check=False: hv.vm(check=check, **vm_args(hv, networks=[
        {'bridge': 'br0', 'address': '10.77.0.50'}])), hv)[0]
    mac = vm['vm']['networks'][0]['mac']
    moved = converge(lambda check=False: hv.vm(check=check, **vm_args(hv, networks=[
        {'bridge': 'br0', 'address': '10.77.0.60'}])), hv)[0]
    assert moved['vm']['networks'][0]['address'] == '10.77.0.60'
    nic = DhcpClient(spaces, hv.netns, 'br0', mac, hv.tmp_path)
    assert nic.lease()['ip'] == '10.77.0.60'
    # without a domain the VM answers to its bare name
    sh('ip', 'addr', 'add', '10.77.0.60/24', 'dev', 'eth0', ns=nic.ns)
    assert resolve(nic.ns, 'web1', BRIDGE_IP) == ['10.77.0.60']
    # the hosts files are lost (run_dir is a tmpfs across a reboot): ch_network rebuilds them from
    # the records, without restarting the server
    pid = dnsmasq_pid(hv)
    hosts = os.path.join(hv.run_dir, 'dhcp', 'br0', 'hosts')
    for entry in os.listdir(hosts):
        os.unlink(os.path.join(hosts, entry))
    again = net_task(hv, dhcp=dhcp_opts(domain=None))
    assert again['changed'] is True and again['network']['dhcp']['pid'] == pid
    assert os.listdir(hosts) == ['web1.0']
    assert net_task(hv, dhcp=dhcp_opts(domain=None))['changed'] is False


def test_forwarding_to_the_host_resolvers(host, spaces):
    hv = host
    stub = spaces.spawn(hv.netns, 'python3', NETTOOL, 'dnsstub', '127.0.0.1', STUB_NAME, STUB_IP)
    assert stub.stdout.readline().strip() == 'ready'
    assert net_task(hv, dhcp=dhcp_opts())['_rc'] == 0
    client = DhcpClient(spaces, hv.netns, 'br0', '02:aa:bb:cc:dd:02', hv.tmp_path)
    lease = client.lease()
    sh('ip', 'addr', 'add', '%s/24' % lease['ip'], 'dev', 'eth0', ns=client.ns)
    assert resolve(client.ns, STUB_NAME, BRIDGE_IP) == [STUB_IP]
    assert resolve(client.ns, 'elsewhere.example', BRIDGE_IP) == 'NXDOMAIN'      # the stub's answer
    # dns: false: no DNS on the bridge, and clients are pointed at dns_servers
    quiet = net_task(hv, dhcp=dhcp_opts(dns=False, dns_servers=['192.0.2.53']))
    assert quiet['changed'] is True and quiet['network']['dhcp']['dns'] is False
    assert client.lease()['dns'] == '192.0.2.53'
    assert resolve(client.ns, STUB_NAME, BRIDGE_IP) is None


def test_killed_server_is_restarted_and_leases_survive_and_removal(host, spaces):
    hv = host
    assert net_task(hv, dhcp=dhcp_opts())['_rc'] == 0
    client = DhcpClient(spaces, hv.netns, 'br0', '02:aa:bb:cc:dd:03', hv.tmp_path)
    ip = client.lease()['ip']
    pid = dnsmasq_pid(hv)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    check = net_task(hv, check=True, dhcp=dhcp_opts())
    assert check['changed'] is True and check['network']['dhcp']['pid'] is None
    assert any('not running' in w for w in check.get('warnings', [])), check
    restarted = net_task(hv, dhcp=dhcp_opts())
    assert restarted['changed'] is True and any('started it again' in w for w in restarted['warnings'])
    new_pid = restarted['network']['dhcp']['pid']
    assert new_pid != pid and alive(new_pid) and restarted['diff']['before']['dhcp']['running'] is False
    # the lease survived the restart: listed, and the client keeps its address
    assert ip in [l['ip'] for l in restarted['network']['dhcp']['leases']]
    assert client.lease()['ip'] == ip
    assert net_task(hv, dhcp=dhcp_opts())['changed'] is False
    # a configuration change restarts it (and only then)
    longer = converge(lambda check=False: net_task(hv, check, dhcp=dhcp_opts(lease_time='12h')), hv)[0]
    assert longer['network']['dhcp']['pid'] != new_pid and not alive(new_pid)
    assert client.lease()['lease'] == str(12 * 3600)
    # dhcp removed: no dnsmasq left, and its files are gone
    last = dnsmasq_pid(hv)
    converge(lambda check=False: net_task(hv, check), hv)
    assert not alive(last) and not os.path.exists(os.path.join(hv.run_dir, 'dhcp', 'br0'))
    assert not os.path.exists(os.path.join(hv.state_dir, 'dhcp', 'br0.leases'))
    assert client.lease() is None
    # state absent stops it too
    assert net_task(hv, dhcp=dhcp_opts())['changed'] is True
    last = dnsmasq_pid(hv)
    absent = net_task(hv, state='absent')
    assert absent['changed'] is True and not alive(last)
    assert not os.path.exists(os.path.join(hv.run_dir, 'dhcp', 'br0'))


@pytest.mark.parametrize('dhcp, addresses, option, words', [
    ({'ranges': ['10.78.0.10-10.78.0.20']}, None, 'dhcp.ranges[0]', 'not inside the subnet'),
    ({'ranges': ['10.77.0.1-10.77.0.20']}, None, 'dhcp.ranges[0]', "bridge's own address"),
    ({'ranges': ['10.77.0.30-10.77.0.20']}, None, 'dhcp.ranges[0]', 'starts after it ends'),
    ({'lease_time': 'forever'}, None, 'dhcp.lease_time', 'not a lease time'),
    ({'ranges': [RANGE]}, ['fd00:77::1/64'], 'dhcp', 'no IPv4 address'),
])
def test_bad_dhcp_input_changes_nothing(host, dhcp, addresses, option, words):
    hv = host
    before = files(hv)
    args = {'dhcp': dhcp}
    if addresses is not None:
        args['addresses'] = addresses
    res = net_task(hv, **args)
    assert res['_rc'] != 0 and res['msg'].startswith(option + ':') and words in res['msg'], res
    assert files(hv) == before and dnsmasq_pid(hv) is None
    assert sh('ip', '-j', 'addr', 'show', 'dev', 'br0', ns=hv.netns).stdout.count('10.77.0.1') == 0


@pytest.mark.parametrize('address, option, words', [
    ('10.77.0.1', 'networks[0].address', "address of bridge br0 itself"),
    ('10.78.0.5', 'networks[0].address', 'not inside the subnet'),
    ('10.77.0.500', 'networks[0].address', 'not an IPv4 address'),
    ('10.77.0.51', 'networks[0].address', 'claimed by VM web2 and by VM web1'),
])
def test_bad_vm_address_changes_nothing(host, address, option, words):
    hv = host
    assert net_task(hv, dhcp=dhcp_opts())['_rc'] == 0
    assert hv.vm(**vm_args(hv, name='web2', networks=[{'bridge': 'br0', 'address': '10.77.0.51'}]))['_rc'] == 0
    before = hv.files()
    res = hv.vm(**vm_args(hv, networks=[{'bridge': 'br0', 'address': address}]))
    assert res['_rc'] != 0 and res['msg'].startswith(option + ':') and words in res['msg'], res
    assert hv.files() == before


def test_vm_address_needs_a_dhcp_bridge(host):
    hv = host
    assert net_task(hv)['_rc'] == 0
    before = hv.files()
    res = hv.vm(**vm_args(hv, networks=[{'bridge': 'br0', 'address': '10.77.0.50'}]))
    assert res['_rc'] != 0 and res['msg'].startswith('networks[0].address:') and 'no DHCP server' in res['msg']
    assert hv.files() == before
