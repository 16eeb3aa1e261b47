"""ch_network with a VMM: the bridge made by the module (ansible-playbook), taps made with the
netlink API ch_vm uses, and the CH simulator (which opens taps with TUNSETIFF exactly like CH)
booting a VM on them inside the namespace. Then absent is refused while the VM runs, and once it
is gone absent + prune_taps cleans up."""
import json
import os
import signal
import socket
import sys
import time

import pytest

from tests.support.ansible import run_playbook

from ansible_collections.cloudhv.ch.plugins.module_utils import vm_record
from ansible_collections.cloudhv.ch.plugins.module_utils.netlink import Netlink
from ansible_collections.cloudhv.ch.plugins.module_utils.spec import tap_name as spec_tap_name

from tests.network.netutil import links


def tap_name(seed):
    """The collection's tap name for NIC <index> of VM <name> (seed '<name>/<index>') on a test host."""
    vm, index = seed.split('/')
    return spec_tap_name('test-host', vm, int(index))


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTALL = os.path.join(REPO, 'tests', 'simulator', 'install.py')
MODULE = 'cloudhv.ch.ch_network'

pytestmark = pytest.mark.skipif(not os.path.exists(INSTALL), reason='the CH simulator (tests/simulator/install.py) is missing')


def _wait_socket(path, proc, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError('the simulator exited: %s' % proc.stderr.read())
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return
        except OSError:
            time.sleep(0.02)
        finally:
            sock.close()
    raise AssertionError('no API socket at %s after %s s' % (path, timeout))


def _api(sock, method, endpoint, body=None):
    import httpx
    with httpx.Client(transport=httpx.HTTPTransport(uds=sock), timeout=10) as client:
        resp = client.request(method, 'http://localhost/api/v1/' + endpoint,
                              content=json.dumps(body) if body is not None else None,
                              headers={'Content-Type': 'application/json'} if body is not None else {})
    return resp


def test_vm_on_a_ch_network_bridge(tmp_path, netns, namespaces):
    if os.path.dirname(INSTALL) not in sys.path:
        sys.path.insert(0, os.path.dirname(INSTALL))
    from install import install_launcher
    launcher = install_launcher(str(tmp_path / 'cloud-hypervisor'))
    state_dir, run_dir = tmp_path / 'state', tmp_path / 'run'
    common = {'netns': netns, 'state_dir': str(state_dir), 'run_dir': str(run_dir)}

    bridge = dict(common, name='chbr0', addresses=['10.66.0.1/24'], isolation=True)
    res = run_playbook(tmp_path, tasks=[{'name': 'bridge', MODULE: bridge}])
    assert res.rc == 0 and res.task('bridge')['changed'] is True, res

    single, multi = tap_name('web1/0'), tap_name('web1/1')
    with Netlink(netns) as nl:
        assert nl.ensure_tap(single, 'chbr0') is True
        assert nl.ensure_tap(multi, 'chbr0', multi_queue=True) is True

    os.makedirs(str(run_dir), exist_ok=True)
    sock = str(run_dir / 'web1.sock')
    kernel = tmp_path / 'vmlinux'
    kernel.write_bytes(b'\x7fELF fake kernel')
    vmm = namespaces.spawn(netns, launcher, '--api-socket', 'path=%s' % sock)
    _wait_socket(sock, vmm)
    create = _api(sock, 'PUT', 'vm.create', {
        'payload': {'kernel': str(kernel)}, 'console': {'mode': 'Off'}, 'serial': {'mode': 'Null'},
        'net': [{'tap': single, 'num_queues': 2}, {'tap': multi, 'num_queues': 4}]})
    assert create.status_code == 204, create.text
    boot = _api(sock, 'PUT', 'vm.boot')
    assert boot.status_code == 204, boot.text
    info = _api(sock, 'GET', 'vm.info').json()
    assert info['state'] == 'Running'
    assert [n['tap'] for n in info['config']['net']] == [single, multi]

    # the VMM holds both taps open, and they are ports of the bridge ch_network made
    seen = links(netns)
    for tap in (single, multi):
        assert seen[tap]['master'] == 'chbr0'
        assert 'LOWER_UP' in seen[tap]['flags'], seen[tap]     # carrier: a process has it open

    # the VM's record (as ch_vm writes it) and pid file: the VM is running
    (state_dir / 'vms' / 'web1').mkdir(parents=True)
    (state_dir / 'vms' / 'web1' / 'vm.json').write_text(json.dumps(vm_record.stamp(vm_record.build(
        networks=[vm_record.nic(single, 'chbr0'), vm_record.nic(multi, 'chbr0', net_id='net1')],
        run_state='running'), 'web1')))
    (run_dir / 'web1.pid').write_text('%d\n' % vmm.pid)

    res = run_playbook(tmp_path, tasks=[
        {'name': 'prune', MODULE: dict(common, name='chbr0', prune_taps=True)},
        {'name': 'absent', MODULE: dict(common, name='chbr0', state='absent'), 'ignore_errors': True},
    ])
    assert res.task('prune')['changed'] is False
    assert res.task('prune')['network']['pruned'] == []
    assert res.task('prune')['network']['taps'] == sorted([single, multi])
    refused = res.task('absent')
    assert 'in use' in refused['msg'] and 'VM web1' in refused['msg'], refused
    assert 'chbr0' in links(netns)

    # the VMM dies (a crash): its taps are now leftovers
    os.killpg(vmm.pid, signal.SIGKILL)
    vmm.wait(timeout=10)
    absent = dict(common, name='chbr0', state='absent', prune_taps=True)
    res = run_playbook(tmp_path, tasks=[{'name': 'absent', MODULE: absent}])
    out = res.task('absent')
    assert out['changed'] is True, out
    assert out['network']['pruned'] == sorted([single, multi])
    remaining = links(netns)
    assert 'chbr0' not in remaining and single not in remaining and multi not in remaining
