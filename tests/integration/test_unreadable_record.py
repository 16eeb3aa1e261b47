"""One VM's record that cannot be used (truncated by a full disk or a hand edit, or written by a
newer release) blinds only that VM: ch_vm_info lists the others as usual and that one as unknown
with the error; ch_vm state=absent refuses it with the way out, and force=true removes it (VMM,
taps, run files, record) without touching its disks."""
import json
import os
import subprocess

from tests.integration.test_ch_vm import vm_args


def links(hv):
    return subprocess.run(['ip', '-n', hv.netns, '-o', 'link'], capture_output=True, text=True,
                          check=True).stdout


def record_path(hv, name):
    return os.path.join(hv.state_dir, 'vms', name, 'vm.json')


def alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    with open('/proc/%d/stat' % pid) as handle:
        return handle.read().split(')')[-1].split()[0] != 'Z'


def test_truncated_record_blinds_only_its_vm_and_force_removes_it(hv_ns):
    hv = hv_ns
    outside = str(hv.tmp_path / 'outside.raw')
    web1 = hv.vm(**vm_args(hv, disks=[{'path': outside, 'size': '16M'}], networks=[{'bridge': 'br0'}]))
    assert web1['_rc'] == 0, web1
    tap = web1['vm']['networks'][0]['tap']
    assert hv.vm(**vm_args(hv, name='web2'))['_rc'] == 0
    pid = hv.pid('web1')
    with open(record_path(hv, 'web1')) as handle:
        text = handle.read()
    with open(record_path(hv, 'web1'), 'w') as handle:
        handle.write(text[:len(text) // 2])
    disk_before = os.stat(outside)

    vms = dict((vm['name'], vm) for vm in hv.info())
    assert vms['web2']['state'] == 'running' and vms['web2']['pid'] == hv.pid('web2')
    assert vms['web1']['state'] == 'unknown', vms['web1']
    assert 'is not valid JSON' in vms['web1']['error'] and 'state=absent force=true' in vms['web1']['error']

    refused = hv.vm(name='web1', state='absent')
    assert refused['_rc'] != 0
    assert 'is not valid JSON' in refused['msg'] and 'name=web1 state=absent force=true' in refused['msg'], refused
    assert alive(pid) and os.path.exists(record_path(hv, 'web1'))

    files = hv.files()
    pred = hv.vm(check=True, name='web1', state='absent', force=True)
    assert pred['_rc'] == 0 and pred['changed'], pred
    assert hv.files() == files and alive(pid) and tap in links(hv)

    res = hv.vm(name='web1', state='absent', force=True)
    assert res['_rc'] == 0 and res['changed'], res
    assert res['changes'] == pred['changes']
    assert res['changes'][0] == 'stop the VMM (pid %d)' % pid
    assert 'remove taps %s' % tap in res['changes'], res['changes']
    assert not alive(pid)
    assert tap not in links(hv)
    for leftover in ('web1.sock', 'web1.pid', 'web1.lock'):
        assert not os.path.exists(os.path.join(hv.run_dir, leftover)), leftover
    assert not os.path.exists(record_path(hv, 'web1'))
    after = os.stat(outside)
    for field in ('st_size', 'st_mtime_ns', 'st_ino'):
        assert getattr(after, field) == getattr(disk_before, field), field
    assert [vm['name'] for vm in hv.info()] == ['web2'] and hv.info()[0]['state'] == 'running'

    again = hv.vm(name='web1', state='absent', force=True)
    assert again['_rc'] == 0 and not again['changed'], again


def test_record_from_a_newer_release(hv):
    assert hv.vm(**vm_args(hv, state='stopped'))['_rc'] == 0
    with open(record_path(hv, 'web1')) as handle:
        record = json.load(handle)
    record['record_version'] = 99
    with open(record_path(hv, 'web1'), 'w') as handle:
        json.dump(record, handle)

    [info] = hv.info()
    assert info['state'] == 'unknown' and 'record_version 99' in info['error'], info
    for args in ({'state': 'running'}, {'state': 'absent'}):
        res = hv.vm(**vm_args(hv, **args))
        assert res['_rc'] != 0 and 'newer release' in res['msg'] and 'force=true' in res['msg'], res
    assert os.path.exists(record_path(hv, 'web1'))

    res = hv.vm(name='web1', state='absent', force=True, purge=True)
    assert res['_rc'] == 0 and res['changed'], res
    assert any('purge: skipped' in w for w in res.get('warnings', [])), res
    assert not os.path.exists(record_path(hv, 'web1'))
    assert hv.info() == []
