"""The CH API client against the simulator: every method, and the error mapping."""
import json
import os
import socket

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils.api import ChClient
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import ChApiError, VmmNotReachable


def config(kernel, **extra):
    cfg = {'payload': {'kernel': kernel}, 'cpus': {'boot_vcpus': 1, 'max_vcpus': 4},
           'memory': {'size': 512 << 20, 'hotplug_size': 512 << 20}, 'console': {'mode': 'Off'},
           'serial': {'mode': 'Null'}}
    cfg.update(extra)
    return cfg


def test_every_lifecycle_method(make_vmm, kernel, tmp_path):
    vmm = make_vmm()
    vmm.launch()
    api = vmm.client()
    ping = api.ping()
    assert ping['version'].startswith('53.')
    with pytest.raises(ChApiError) as err:
        api.info()
    assert err.value.status == 404
    assert api.create(config(kernel)) is None
    assert api.info()['state'] == 'Created'
    api.boot()
    info = api.info()
    assert info['state'] == 'Running'
    assert info['config']['cpus']['boot_vcpus'] == 1
    assert isinstance(api.counters(), dict)
    api.pause()
    assert api.info()['state'] == 'Paused'
    api.resume()
    api.reboot()
    assert api.info()['state'] == 'Running'
    api.resize(desired_vcpus=3)
    assert api.info()['config']['cpus']['boot_vcpus'] == 3
    api.resize(desired_ram=768 << 20)
    assert api.info()['memory_actual_size'] == 768 << 20
    disk = tmp_path / 'extra.raw'
    disk.write_bytes(b'\0' * 4096)
    added = api.add_disk({'path': str(disk), 'id': 'extra', 'image_type': 'Raw'})
    assert added['id'] == 'extra' and 'bdf' in added
    assert any(d.get('id') == 'extra' for d in api.info()['config']['disks'])
    api.remove_device('extra')
    assert not any(d.get('id') == 'extra' for d in api.info()['config'].get('disks') or [])
    api.shutdown()
    assert api.info()['state'] == 'Created'
    api.delete()
    with pytest.raises(ChApiError) as err:
        api.info()
    assert err.value.status == 404
    # one connection was reused for all of that
    assert api.requests > 15
    api.vmm_shutdown()
    assert vmm._wait_exit(vmm._proc.pid, 5)


def test_snapshot_and_restore(make_vmm, kernel, tmp_path):
    src = make_vmm('src')
    src.launch()
    api = src.client()
    api.create(config(kernel))
    api.boot()
    snap = tmp_path / 'snap'
    snap.mkdir()
    with pytest.raises(ChApiError) as err:
        api.snapshot(str(snap))          # needs Paused
    assert err.value.status == 500 and err.value.messages
    api.pause()
    api.snapshot(str(snap))
    assert sorted(os.listdir(snap)) == ['config.json', 'memory-ranges', 'state.json']
    dst = make_vmm('dst')
    dst.launch()
    dst.client().restore(str(snap), resume=True)
    assert dst.client().info()['state'] == 'Running'
    # restore into a VMM that has a config is refused
    with pytest.raises(ChApiError):
        dst.client().restore(str(snap))


def test_power_button_ends_the_process(make_vmm, kernel):
    vmm = make_vmm()
    vmm.launch()
    api = vmm.client()
    api.create(config(kernel))
    api.boot()
    api.power_button()
    assert vmm._wait_exit(vmm._proc.pid, 5)


def test_api_error_carries_endpoint_status_and_ch_messages(make_vmm, kernel):
    vmm = make_vmm()
    vmm.launch()
    api = vmm.client()
    api.create(config(kernel))
    with pytest.raises(ChApiError) as err:
        api.create(config(kernel))
    exc = err.value
    assert exc.endpoint == 'vm.create' and exc.status == 500
    assert exc.messages and all(isinstance(m, str) for m in exc.messages)
    assert exc.messages[0] in exc.msg
    with pytest.raises(ChApiError) as err:
        api.call('PUT', 'vm.create', {'payload': {'kernel': kernel}, 'cpus': {'boot_vcpus': 'two'}})
    assert err.value.status == 400
    with pytest.raises(ChApiError) as err:
        api.call('GET', 'vm.nonexistent')
    assert err.value.status == 404


def test_missing_socket_is_not_reachable(tmp_path):
    api = ChClient(str(tmp_path / 'nothing.sock'), timeout=2)
    with pytest.raises(VmmNotReachable) as err:
        api.ping()
    assert 'nothing.sock' in err.value.msg


def test_refusing_socket_is_not_reachable(tmp_path):
    path = str(tmp_path / 'dead.sock')
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.close()  # the file stays, nobody listens: ECONNREFUSED
    with pytest.raises(VmmNotReachable):
        ChClient(path, timeout=2).ping()


class _Response(object):
    def __init__(self, text):
        self.text = text


def test_error_chain_drops_chs_rust_backtraces():
    """The real CH v53.0 appends a Rust backtrace to some error messages (seen on vm.snapshot);
    the message keeps its text and closing parenthesis, the frames go."""
    from ansible_collections.cloudhv.ch.plugins.module_utils.api import _messages
    body = json.dumps([
        'Error from API', 'Cannot snapshot VM',
        'Could not get vCPU state GetNestedState(Invalid argument (os error 22)\n\nStack backtrace:\n'
        '   0: <unknown>\n  12: start_thread\n             at ./nptl/pthread_create.c:442:8\n'
        '  13: clone3\n             at ./misc/../sysdeps/unix/sysv/linux/x86_64/clone3.S:81:0)'])
    assert _messages(_Response(body)) == [
        'Error from API', 'Cannot snapshot VM',
        'Could not get vCPU state GetNestedState(Invalid argument (os error 22))']
    plain = json.dumps(['Error from API', 'VM is not running'])
    assert _messages(_Response(plain)) == ['Error from API', 'VM is not running']
