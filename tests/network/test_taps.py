"""The tap API ch_vm uses: persistent taps with exactly the flags CH opens them with."""
import sys

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils.errors import HostError, OptionError
from ansible_collections.cloudhv.ch.plugins.module_utils.netlink import (
    IFF_MULTI_QUEUE,
    IFF_NO_PI,
    IFF_PERSIST,
    IFF_TAP,
    IFF_VNET_HDR,
    Netlink,
    TAP_PREFIX,
    is_collection_tap,
)
from ansible_collections.cloudhv.ch.plugins.module_utils.spec import tap_name as spec_tap_name

from tests.network.netutil import links, sh, sysctl


def tap_name(seed):
    """The collection's tap name for NIC <index> of VM <name> (seed '<name>/<index>') on a test host."""
    vm, index = seed.split('/')
    return spec_tap_name('test-host', vm, int(index))


# Open a tap by name like CH's net_util::Tap::open_named does: TUNSETIFF with
# IFF_TAP|IFF_NO_PI|IFF_VNET_HDR (+ IFF_MULTI_QUEUE for more than one queue pair), one fd per pair.
OPEN_LIKE_CH = r'''
import fcntl, os, struct, sys
name, pairs = sys.argv[1], int(sys.argv[2])
flags = 0x0002 | 0x1000 | 0x4000 | (0x0100 if pairs > 1 else 0)
fds = []
try:
    for _ in range(pairs):
        fd = os.open('/dev/net/tun', os.O_RDWR)
        fcntl.ioctl(fd, 0x400454ca, struct.pack('16sH22x', name.encode(), flags))
        fds.append(fd)
except OSError as exc:
    print('errno', exc.errno)
    sys.exit(1)
print('ok', len(fds))
'''


def open_like_ch(ns, name, pairs=1):
    return sh(sys.executable, '-c', OPEN_LIKE_CH, name, pairs, ns=ns, check=False).stdout.strip()


def tun_flags(ns, name):
    return int(sh('cat', '/sys/class/net/%s/tun_flags' % name, ns=ns).stdout.strip(), 16)


def test_names():
    name = tap_name('web1/0')
    assert name == tap_name('web1/0') and name != tap_name('web1/1')
    assert len(name) == 15 and name.startswith(TAP_PREFIX) and is_collection_tap(name)
    assert not is_collection_tap('chvXYZ') and not is_collection_tap('tap0') and not is_collection_tap('chv0123456789abc')


def test_ensure_tap_single_queue(netns):
    with Netlink(netns) as nl:
        nl.ensure_bridge('br0', mtu=1400)
        tap = tap_name('vm/0')
        assert nl.ensure_tap(tap, 'br0') is True
        assert nl.ensure_tap(tap, 'br0') is False
        link = nl.link(tap)
        assert nl.taps_on_bridge('br0') == [tap]
    want = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_PERSIST
    assert tun_flags(netns, tap) == want == link['tun_flags']
    seen = links(netns)[tap]
    assert seen['master'] == 'br0' and 'UP' in seen['flags'] and seen['mtu'] == 1400
    assert seen['linkinfo']['info_kind'] == 'tun'
    # CH's open succeeds with one pair, and fails (EINVAL) with a multi-queue open
    assert open_like_ch(netns, tap, 1) == 'ok 1'
    assert open_like_ch(netns, tap, 2) == 'errno 22'


def test_ensure_tap_multi_queue_and_recreate(netns):
    with Netlink(netns) as nl:
        nl.ensure_bridge('br0')
        tap = tap_name('vm/1')
        assert nl.ensure_tap(tap, 'br0', multi_queue=True) is True
        assert tun_flags(netns, tap) & IFF_MULTI_QUEUE
        assert open_like_ch(netns, tap, 4) == 'ok 4'
        assert nl.ensure_tap(tap, 'br0', multi_queue=True) is False
        # the VM went back to one queue pair: the tap is recreated with the right flags
        assert nl.ensure_tap(tap, 'br0') is True
        assert tun_flags(netns, tap) == IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_PERSIST
        assert open_like_ch(netns, tap, 1) == 'ok 1'


def test_ensure_tap_fixes_foreign_flags_and_moves(netns):
    # made by hand as multi-queue: CH's single-pair open fails with EINVAL
    sh('ip', 'tuntap', 'add', 'dev', 'chv00000000beef', 'mode', 'tap', 'multi_queue', ns=netns)
    assert open_like_ch(netns, 'chv00000000beef', 1) == 'errno 22'
    # and one without the vnet header flag
    sh('ip', 'tuntap', 'add', 'dev', 'chv00000000cafe', 'mode', 'tap', ns=netns)
    assert not tun_flags(netns, 'chv00000000cafe') & IFF_VNET_HDR
    with Netlink(netns) as nl:
        nl.ensure_bridge('br0')
        nl.ensure_bridge('br1', mtu=9000)
        assert nl.ensure_tap('chv00000000beef', 'br0') is True
        assert open_like_ch(netns, 'chv00000000beef', 1) == 'ok 1'
        assert nl.ensure_tap('chv00000000cafe', 'br0') is True
        assert tun_flags(netns, 'chv00000000cafe') == IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_PERSIST
        assert nl.delete_link('chv00000000cafe') is True
        assert nl.ensure_tap('chv00000000beef', 'br1') is True
        assert nl.link('chv00000000beef')['master'] == 'br1'
        assert nl.link('chv00000000beef')['mtu'] == 9000
        assert nl.taps_on_bridge('br0') == [] and nl.taps_on_bridge('br1') == ['chv00000000beef']
        assert nl.delete_link('chv00000000beef') is True
        assert nl.delete_link('chv00000000beef') is False
    assert 'chv00000000beef' not in links(netns)


def test_ensure_tap_refuses_other_kinds(netns):
    sh('ip', 'link', 'add', 'chv0000000000aa', 'type', 'veth', 'peer', 'name', 'peer0', ns=netns)
    with Netlink(netns) as nl:
        nl.ensure_bridge('br0')
        with pytest.raises(HostError):
            nl.ensure_tap('chv0000000000aa', 'br0')
        with pytest.raises(HostError):
            nl.ensure_tap(tap_name('x/0'), 'nobridge')
        with pytest.raises(OptionError):
            nl.ensure_tap('a-name-that-is-too-long', 'br0')
    assert links(netns)['chv0000000000aa']['linkinfo']['info_kind'] == 'veth'


def test_forwarding_sysctl_is_per_namespace(netns):
    with Netlink(netns) as nl:
        nl.ensure_bridge('br0')
        assert nl.get_forwarding('br0') == 0
        assert nl.set_forwarding('br0', 1) is True
        assert nl.set_forwarding('br0', 1) is False
        assert nl.get_forwarding('br0') == 1
        assert nl.get_forwarding('nosuch') is None
    assert sysctl(netns, 'net/ipv4/conf/br0/forwarding') == '1'


def test_missing_netns_and_missing_pyroute2(monkeypatch):
    from ansible_collections.cloudhv.ch.plugins.module_utils.errors import MissingDependency
    with pytest.raises(OptionError) as info:
        Netlink('cht-does-not-exist').open()
    assert info.value.option == 'netns'
    monkeypatch.setitem(sys.modules, 'pyroute2', None)
    with pytest.raises(MissingDependency) as info:
        Netlink().open()
    assert info.value.library == 'pyroute2'
