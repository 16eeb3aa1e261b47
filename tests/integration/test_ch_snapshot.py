"""ch_snapshot, ch_vm clone_from / state=standby and ch_vm_info's snapshot listing, driven through
real ansible-playbook runs against the simulator."""
import io
import json
import os
import subprocess

import pytest
import yaml

from ansible_collections.cloudhv.ch.plugins.module_utils import recovery
from ansible_collections.cloudhv.ch.plugins.module_utils import snapshot_store as snapmod
from ansible_collections.cloudhv.ch.plugins.module_utils.api import ChClient
from ansible_collections.cloudhv.ch.plugins.module_utils.store import Layout
from ansible_collections.cloudhv.ch.plugins.module_utils.process import proc_cmdline
from ansible_collections.cloudhv.ch.plugins.module_utils.vm import Vm


def vm_args(hv, name='web1', **extra):
    args = {'name': name, 'kernel': hv.kernel, 'cmdline': 'console=ttyS0',
            'disks': [{'path': disk_path(hv, name), 'size': '16M'}]}
    args.update(extra)
    return args


def disk_path(hv, name='web1'):
    return os.path.join(hv.state_dir, 'vms', name, 'root.raw')


def task(hv, module, args, check=False, env=None):
    res = hv.play([{'name': 't', module: args}], check=check, env=env)
    out = res.task('t')
    out['_rc'] = res.rc
    out['_status'] = [r['status'] for r in res.results if r['task'] == 't'][-1]
    return out


def batch(hv, *tasks):
    """Several tasks in one ansible-playbook run (saves its start-up): (name, module, args[, check])."""
    play = []
    for item in tasks:
        entry = {'name': item[0], item[1]: item[2]}
        if len(item) > 3 and item[3]:
            entry['check_mode'] = True
        play.append(entry)
    res = hv.play(play)
    assert res.rc == 0, res
    return dict((item[0], res.task(item[0])) for item in tasks)


def snap_task(name, check=False, **args):
    full = {'vm': 'web1', 'name': 's1'}
    full.update(args)
    return (name, 'cloudhv.ch.ch_snapshot', full, check)


def snap(hv, check=False, env=None, **args):
    full = {'vm': 'web1', 'name': 's1'}
    full.update(args)
    return task(hv, 'cloudhv.ch.ch_snapshot', full, check=check, env=env)


def requests(path, pid=None):
    """(pid, endpoint) of the PUTs in the simulator's request log."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as handle:
        for line in handle:
            entry = json.loads(line)
            if entry['method'] == 'PUT' and (pid is None or entry['pid'] == pid):
                out.append(entry['endpoint'])
    return out


def restore_bodies(path):
    """The bodies of the vm.restore requests in the simulator's request log, in order."""
    with open(path) as handle:
        return [e.get('body') for e in map(json.loads, handle) if e['endpoint'] == 'vm.restore']


def vm_state(hv, name='web1'):
    return hv.info(name)[0]['state']


def write_at(path, data, offset=0):
    with open(path, 'r+b') as handle:
        handle.seek(offset)
        handle.write(data)


def read_at(path, size, offset=0):
    with open(path, 'rb') as handle:
        handle.seek(offset)
        return handle.read(size)


@pytest.fixture
def logged(hv, tmp_path):
    """hv with the simulator's request log on (set before any VMM starts)."""
    hv.env = {'CHSIM_REQUEST_LOG': str(tmp_path / 'requests.jsonl')}
    hv.request_log = str(tmp_path / 'requests.jsonl')
    return hv


def test_present_absent_idempotent_and_run_state_kept(logged):
    hv = logged
    assert hv.vm(**vm_args(hv))['changed']
    pid = hv.pid('web1')
    files = hv.files()
    pred = snap(hv, check=True)
    assert pred['_rc'] == 0 and pred['changed'], pred
    assert hv.files() == files, 'check mode changed files'
    first = snap(hv)
    assert first['changed'] and first['changes'] == pred['changes'], (pred, first)
    path = os.path.join(hv.state_dir, 'vms', 'web1', 'snapshots', 's1')
    result = first['snapshot']
    assert result['path'] == path and result['name'] == 's1' and result['vm'] == 'web1'
    assert result['ch_version'] == '53.0.0' and result['includes_disks'] is True
    assert result['size_bytes'] > 0 and result['created']
    assert sorted(os.listdir(path)) == ['config.json', 'disks', 'manifest.json', 'memory-ranges', 'state.json']
    assert os.listdir(os.path.join(path, 'disks')) == ['disk0-root.raw']
    # running stays running, and it was paused only around the snapshot
    assert requests(hv.request_log, pid)[-3:] == ['vm.pause', 'vm.snapshot', 'vm.resume']
    assert vm_state(hv) == 'running' and hv.pid('web1') == pid
    out = batch(hv, snap_task('again'), snap_task('again-check', check=True),
                ('info', 'cloudhv.ch.ch_vm_info', {'name': 'web1'}))
    again = out['again']
    assert again['changed'] is False and again['diff']['before'] == again['diff']['after']
    assert out['again-check']['changed'] is False
    listed = out['info']['vms'][0]['snapshots']
    assert [(s['name'], s['path'], s['ch_version']) for s in listed] == [('s1', path, '53.0.0')]
    assert (listed[0]['size_bytes'], listed[0]['created']) == (result['size_bytes'], result['created'])
    # paused stays paused: no pause/resume around the snapshot
    assert hv.vm(**vm_args(hv, state='paused'))['changed']
    count = len(requests(hv.request_log, pid))
    s2 = snap(hv, name='s2', include_disks=False)
    assert s2['changed'] and s2['snapshot']['includes_disks'] is False
    assert 'disks' not in os.listdir(s2['snapshot']['path'])
    assert requests(hv.request_log, pid)[count:] == ['vm.snapshot']
    assert vm_state(hv) == 'paused'
    # absent, absent again, check mode
    assert snap(hv, state='absent', check=True)['changed'] is True
    assert os.path.isdir(path)
    out = batch(hv, snap_task('gone', state='absent'), snap_task('gone-again', state='absent'),
                snap_task('gone-check', check=True, state='absent'),
                ('info', 'cloudhv.ch.ch_vm_info', {'name': 'web1'}))
    assert out['gone']['changed'] and not os.path.exists(path)
    assert out['gone-again']['changed'] is False and out['gone-check']['changed'] is False
    assert [s['name'] for s in out['info']['vms'][0]['snapshots']] == ['s2']


def test_restore_brings_back_disks_in_a_new_vmm(logged):
    hv = logged
    hv.vm(**vm_args(hv))
    disk = disk_path(hv)
    write_at(disk, b'before-snapshot', 1 << 20)
    assert snap(hv)['changed']
    write_at(disk, b'AFTER--SNAPSHOT', 1 << 20)
    pid = hv.pid('web1')
    pred = snap(hv, state='restored', prefault=True, check=True)
    assert pred['changed'] and hv.pid('web1') == pid
    assert read_at(disk, 15, 1 << 20) == b'AFTER--SNAPSHOT'
    res = snap(hv, state='restored', prefault=True)
    assert res['changed'] and res['changes'] == pred['changes']
    assert read_at(disk, 15, 1 << 20) == b'before-snapshot'
    new_pid = hv.pid('web1')
    assert new_pid and new_pid != pid and proc_cmdline(pid) is None
    assert requests(hv.request_log, new_pid) == ['vm.restore']
    assert vm_state(hv) == 'running'
    assert not [f for f in os.listdir(os.path.dirname(disk)) if f.startswith('.')], 'leftover temp files'
    # the VM is converged as usual afterwards
    assert hv.vm(**vm_args(hv))['changed'] is False
    # restored again, leaving it paused, with the memory mapped on demand: always changed
    res = snap(hv, state='restored', resume=False, memory_restore_mode='ondemand')
    assert res['changed'] and vm_state(hv) == 'paused'
    # the options reach CH's restore as given
    snap_dir = os.path.join(hv.state_dir, 'vms', 'web1', 'snapshots', 's1')
    bodies = restore_bodies(hv.request_log)
    picked = [(b['source_url'], b.get('prefault'), b.get('memory_restore_mode'), b.get('resume')) for b in bodies]
    assert picked == [('file://' + snap_dir, True, 'Copy', True),
                      ('file://' + snap_dir, False, 'OnDemand', False)], bodies


def test_clone_gets_a_new_identity(hv_ns, tmp_path):
    hv = hv_ns
    hv.request_log = str(tmp_path / 'requests.jsonl')
    hv.env = dict(getattr(hv, 'env', None) or {}, CHSIM_REQUEST_LOG=hv.request_log)
    nets = [{'bridge': 'br0'}]
    ci = {'user_data': {'packages': ['nginx']}}
    uuid = '3d1c8a4e-6f2b-4c1e-9a57-2f0b9d8e7c61'
    src = hv.vm(**vm_args(hv, networks=nets, cloud_init=ci, platform={'uuid': uuid}))
    assert src['changed'], src
    assert snap(hv)['changed']
    clone_args = {'name': 'web2', 'clone_from': {'vm': 'web1', 'snapshot': 's1', 'prefault': True}}
    files = hv.files()
    pred = hv.vm(check=True, **clone_args)
    assert pred['_rc'] == 0 and pred['changed'] and pred['vm']['state'] == 'running', pred
    assert hv.files() == files
    res = hv.vm(**clone_args)
    assert res['_rc'] == 0 and res['changed'] and res['changes'] == pred['changes'], res
    assert res['vm']['state'] == 'running' and hv.pid('web2') not in (None, hv.pid('web1'))
    out = batch(hv, ('again', 'cloudhv.ch.ch_vm', clone_args), ('again-check', 'cloudhv.ch.ch_vm', clone_args, True),
                ('info', 'cloudhv.ch.ch_vm_info', {}))
    assert out['again']['changed'] is False, out['again']['changes']
    assert out['again-check']['changed'] is False
    # new MAC and tap, both live
    s_net, c_net = src['vm']['networks'][0], res['vm']['networks'][0]
    assert c_net['mac'] != s_net['mac'] and c_net['tap'] != s_net['tap']
    infos = dict((vm['name'], vm) for vm in out['info']['vms'])
    live = infos['web2']['live_config']
    assert live['net'][0]['mac'] == c_net['mac'] and live['net'][0]['tap'] == c_net['tap']
    links = subprocess.run(['ip', '-n', hv.netns, '-o', 'link'], capture_output=True, text=True, check=True).stdout
    assert c_net['tap'] in links and s_net['tap'] in links
    # memory-ranges hard-linked, disks copied
    snap_dir = os.path.join(hv.state_dir, 'vms', 'web1', 'snapshots', 's1')
    clone_mem = os.path.join(hv.state_dir, 'vms', 'web2', 'clone-source', 'memory-ranges')
    assert os.stat(clone_mem).st_ino == os.stat(os.path.join(snap_dir, 'memory-ranges')).st_ino
    src_disk, clone_disk = disk_path(hv), disk_path(hv, 'web2')
    assert [d['path'] for d in res['vm']['disks']] == [clone_disk]
    assert live['disks'][0]['path'] == clone_disk
    assert os.stat(src_disk).st_ino != os.stat(clone_disk).st_ino
    write_at(clone_disk, b'clone-only')
    assert read_at(src_disk, 10) != b'clone-only'
    # a regenerated cloud-init image with a new instance-id and hostname
    meta = cidata_meta(os.path.join(hv.state_dir, 'vms', 'web2', 'cidata.iso'))
    assert meta['instance-id'].startswith('iid-web2-') and meta['local-hostname'] == 'web2'
    assert cidata_meta(os.path.join(hv.state_dir, 'vms', 'web1', 'cidata.iso'))['instance-id'] == 'iid-web1'
    assert [d['path'] for d in live['disks'] if d['id'] == 'cidata'] == \
        [os.path.join(hv.state_dir, 'vms', 'web2', 'cidata.iso')]
    # a new SMBIOS UUID (recorded and in the restored config), prefault passed to vm.restore
    new_uuid = res['vm']['config']['platform']['uuid']
    assert new_uuid not in (uuid, None) and live['platform']['uuid'] == new_uuid
    assert infos['web1']['live_config']['platform']['uuid'] == uuid
    bodies = restore_bodies(hv.request_log)
    assert bodies[-1]['prefault'] is True and bodies[-1]['memory_restore_mode'] == 'Copy', bodies
    # the source is untouched and still running
    assert infos['web1']['state'] == 'running'
    # options the task sets are applied to the clone like any change
    grown = hv.vm(**dict(clone_args, memory='1G'))
    assert grown['changed'] and grown['restart_required'] is True
    # clone_from.path: a snapshot named by its directory gives one more identity
    third = hv.vm(name='web3', clone_from={'path': snap_dir})
    assert third['_rc'] == 0 and third['changed'] and third['vm']['state'] == 'running', third
    t_net = third['vm']['networks'][0]
    assert t_net['mac'] not in (s_net['mac'], c_net['mac']) and t_net['tap'] not in (s_net['tap'], c_net['tap'])
    assert [d['path'] for d in third['vm']['disks']] == [disk_path(hv, 'web3')]
    assert os.stat(os.path.join(hv.state_dir, 'vms', 'web3', 'clone-source', 'memory-ranges')).st_ino == \
        os.stat(os.path.join(snap_dir, 'memory-ranges')).st_ino
    # deleting the snapshot says that the two clones keep its memory file (and its space)
    out = batch(hv, snap_task('predict', check=True, state='absent'), snap_task('gone', state='absent'))
    for result in out.values():
        assert result['changed'] and result['warnings'] == [
            'the memory-ranges of snapshot s1 of web1 is hard-linked by 2 clone(s) (their clone-source): '
            'its disk space is freed only when they are removed'], result
    assert not os.path.exists(snap_dir) and vm_state(hv, 'web3') == 'running'


def qemu_img_info(path):
    out = subprocess.run(['qemu-img', 'info', '--output=json', '-U', path], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_linked_clone_overlays_the_snapshot_disks(logged):
    """clone_from.disks=overlay: the clone's writable disk is a qcow2 overlay on the snapshot's
    copy (a linked clone); the snapshot, and a purge of its VM, are refused while the clone uses it."""
    hv = logged
    assert hv.vm(**vm_args(hv))['changed']
    assert snap(hv)['changed']
    snap_dir = os.path.join(hv.state_dir, 'vms', 'web1', 'snapshots', 's1')
    base = os.path.join(snap_dir, 'disks', 'disk0-root.raw')
    base_stat = os.stat(base)
    clone_args = {'name': 'web2', 'clone_from': {'vm': 'web1', 'snapshot': 's1', 'disks': 'overlay'}}
    out = batch(hv, ('predict', 'cloudhv.ch.ch_vm', clone_args, True), ('clone', 'cloudhv.ch.ch_vm', clone_args),
                ('again', 'cloudhv.ch.ch_vm', clone_args), ('again-check', 'cloudhv.ch.ch_vm', clone_args, True),
                ('info', 'cloudhv.ch.ch_vm_info', {'name': 'web2'}))
    assert out['predict']['changed'] and out['clone']['changed'], out['clone']
    assert out['clone']['changes'] == out['predict']['changes']
    assert out['again']['changed'] is False and out['again-check']['changed'] is False, out['again']['changes']
    overlay = os.path.join(hv.state_dir, 'vms', 'web2', 'root.qcow2')
    assert [d['path'] for d in out['clone']['vm']['disks']] == [overlay]
    info = qemu_img_info(overlay)
    assert info['format'] == 'qcow2' and info['backing-filename'] == base
    assert info['backing-filename-format'] == 'raw' and info['virtual-size'] == 16 * 1024 * 1024
    assert os.path.getsize(overlay) < 1024 * 1024          # no data copied
    vm = out['info']['vms'][0]
    assert vm['state'] == 'running'
    [disk] = [d for d in vm['live_config']['disks'] if d['id'] != 'cidata']
    assert disk['path'] == overlay and disk['image_type'] == 'Qcow2' and disk['backing_files'] is True
    with open(hv.request_log) as handle:       # the restore itself got the overlay, not the raw copy
        bodies = [e for e in map(json.loads, handle) if e['endpoint'] == 'vm.restore']
    assert bodies and bodies[-1]['status'] == 204
    with open(os.path.join(hv.state_dir, 'vms', 'web2', 'clone-source', 'config.json')) as handle:
        [restored] = [d for d in json.load(handle)['disks'] if d['id'] != 'cidata']
    assert restored['path'] == overlay and restored['image_type'] == 'Qcow2' and restored['backing_files'] is True
    # the base is only read
    assert os.stat(base).st_mtime == base_stat.st_mtime and os.stat(base).st_size == base_stat.st_size
    # the snapshot, and a purge of its VM, are refused while the clone uses it; nothing is touched
    files = hv.files()
    res = snap(hv, state='absent')
    assert res['_rc'] != 0 and 'web2' in res['msg'] and 'overlay' in res['msg'], res
    res = hv.vm(name='web1', state='absent', purge=True)
    assert res['_rc'] != 0 and "purge" in res['msg'] and 'web2' in res['msg'], res
    assert hv.files() == files and vm_state(hv) == 'running'
    # once the clone is gone, the snapshot can go
    assert hv.vm(name='web2', state='absent', purge=True)['changed']
    assert snap(hv, state='absent')['changed']


@pytest.mark.parametrize('clone_from,fragments', [
    ({'vm': 'web1', 'disks': 'overlay'}, ['clone_from.disks', "fork's snapshot is temporary"]),
    ({'vm': 'web1', 'snapshot': 's1', 'disks': 'bogus'}, ['disks must be one of: copy, overlay', 'clone_from']),
])
def test_linked_clone_refusals(hv, clone_from, fragments):
    assert hv.vm(**vm_args(hv))['changed']
    assert snap(hv)['changed']
    files = hv.files()
    res = hv.vm(name='web2', clone_from=clone_from)
    assert res['_rc'] != 0 and all(f in res['msg'] for f in fragments), res
    assert hv.files() == files


def cidata_meta(path):
    import pycdlib
    iso = pycdlib.PyCdlib()
    iso.open(path)
    try:
        data = io.BytesIO()
        iso.get_file_from_iso_fp(data, rr_path='/meta-data')
    finally:
        iso.close()
    return yaml.safe_load(data.getvalue())


@pytest.mark.parametrize('mode', ['copy', 'ondemand'])
def test_fork_from_running(hv_ns, tmp_path, mode):
    hv = hv_ns
    hv.request_log = str(tmp_path / 'requests.jsonl')
    hv.env = dict(getattr(hv, 'env', None) or {}, CHSIM_REQUEST_LOG=hv.request_log)
    src = hv.vm(**vm_args(hv, networks=[{'bridge': 'br0'}], vsock={'cid': 3}))
    assert src['changed'], src
    src_pid = hv.pid('web1')
    write_at(disk_path(hv), b'source-data')
    fork = {'name': 'web2', 'clone_from': {'vm': 'web1', 'memory_restore_mode': mode}}
    # check mode: predicted, and neither the source nor the host touched
    files, count = hv.files(), len(requests(hv.request_log, src_pid))
    pred = hv.vm(check=True, **fork)
    assert pred['_rc'] == 0 and pred['changed'] and pred['vm']['state'] == 'running', pred
    assert hv.files() == files and len(requests(hv.request_log, src_pid)) == count
    res = hv.vm(**fork)
    assert res['_rc'] == 0 and res['changed'] and res['changes'] == pred['changes'], res
    assert vm_state(hv, 'web1') == 'running' and hv.pid('web1') == src_pid
    # the source was paused only for its snapshot
    assert requests(hv.request_log, src_pid)[count:] == ['vm.pause', 'vm.snapshot', 'vm.resume']
    fork_pid = hv.pid('web2')
    assert fork_pid and fork_pid != src_pid
    assert requests(hv.request_log, fork_pid) == ['vm.restore']
    out = batch(hv, ('again', 'cloudhv.ch.ch_vm', fork), ('again-check', 'cloudhv.ch.ch_vm', fork, True),
                ('info', 'cloudhv.ch.ch_vm_info', {}))
    assert out['again']['changed'] is False and out['again-check']['changed'] is False, out['again']
    infos = dict((vm['name'], vm) for vm in out['info']['vms'])
    assert infos['web1']['state'] == 'running' and infos['web2']['state'] == 'running'
    # a new identity: MAC and tap (live), vsock CID and socket, serial file, disk copies
    s_live, f_live = infos['web1']['live_config'], infos['web2']['live_config']
    s_net, f_net = s_live['net'][0], f_live['net'][0]
    assert f_net['mac'] != s_net['mac'] and f_net['tap'] != s_net['tap']
    assert f_net['mac'] == res['vm']['networks'][0]['mac'] and f_net['tap'] == res['vm']['networks'][0]['tap']
    links = subprocess.run(['ip', '-n', hv.netns, '-o', 'link'], capture_output=True, text=True, check=True).stdout
    assert f_net['tap'] in links and s_net['tap'] in links
    fork_dir = os.path.join(hv.state_dir, 'vms', 'web2')
    assert s_live['vsock']['cid'] == 3 and f_live['vsock']['cid'] not in (3, None), f_live['vsock']
    assert f_live['vsock']['socket'] == os.path.join(fork_dir, 'vsock.sock') != s_live['vsock']['socket']
    assert f_live['serial']['file'] == os.path.join(fork_dir, 'serial.log') != s_live['serial']['file']
    clone_disk = disk_path(hv, 'web2')
    assert read_at(clone_disk, 11) == b'source-data'
    assert os.stat(clone_disk).st_ino != os.stat(disk_path(hv)).st_ino
    # no temporary snapshot left anywhere: none of the source's, and the fork's own restore source
    # goes once the fork runs, except with ondemand, where CH reads the guest memory from it
    assert infos['web1']['snapshots'] == []
    assert not os.path.exists(os.path.join(hv.state_dir, 'vms', 'web1', 'snapshots'))
    leftovers = [f for f in hv.files() if '.partial' in f or recovery.MARKER in f]
    assert leftovers == []
    work = os.path.join(fork_dir, 'clone-source')
    bodies = restore_bodies(hv.request_log)
    assert bodies[-1]['source_url'] == 'file://' + work, bodies
    assert bodies[-1]['memory_restore_mode'] == {'copy': 'Copy', 'ondemand': 'OnDemand'}[mode], bodies
    if mode == 'ondemand':
        assert sorted(os.listdir(work)) == ['config.json', 'memory-ranges', 'state.json']
        return
    assert not os.path.exists(work)
    # what a fork killed after its restore got through, before it cleared its marker, leaves: the
    # next run finishes the clone (nothing to redo) and drops the temporary snapshot then
    os.makedirs(work)
    with open(os.path.join(work, 'memory-ranges'), 'wb') as handle:
        handle.truncate(1 << 20)
    recovery.write_marker(Vm(Layout(hv.state_dir, hv.run_dir), 'web2', None, host='-'),
                          {'op': 'clone', 'files': [], 'work': work, 'memory_restore_mode': mode})
    finished = hv.vm(**fork)
    assert finished['changes'] == ['finish an interrupted clone (its restore had completed)'], finished
    assert not os.path.exists(work) and hv.pid('web2') == fork_pid


def test_snapshot_at_a_path_of_its_own(logged, tmp_path):
    """path: the snapshot lives there, and its name finds it afterwards (listed, unchanged,
    restored and removed without path)."""
    hv = logged
    hv.vm(**vm_args(hv))
    disk = disk_path(hv)
    write_at(disk, b'at-snapshot')
    where = tmp_path / 'elsewhere'
    where.mkdir()
    path = str(where / 'first')
    pred = snap(hv, path=path, check=True)
    assert pred['changed'] and not os.path.exists(path), pred
    first = snap(hv, path=path)
    assert first['changed'] and first['changes'] == pred['changes'] and first['snapshot']['path'] == path
    assert snapmod.read_manifest(path)['name'] == 's1'
    assert not os.path.exists(os.path.join(hv.state_dir, 'vms', 'web1', 'snapshots', 's1'))
    write_at(disk, b'later-write')
    out = batch(hv, snap_task('again', path=path), snap_task('by-name'), ('info', 'cloudhv.ch.ch_vm_info', {'name': 'web1'}),
                snap_task('restore', state='restored'))
    assert out['again']['changed'] is False and out['by-name']['changed'] is False
    assert out['by-name']['snapshot']['path'] == path
    assert [(s['name'], s['path']) for s in out['info']['vms'][0]['snapshots']] == [('s1', path)]
    assert out['restore']['changed'] and read_at(disk, 11) == b'at-snapshot'
    assert vm_state(hv) == 'running'
    gone = snap(hv, state='absent')
    assert gone['changed'] and not os.path.exists(path)
    assert vm_state(hv) == 'running' and hv.info('web1')[0]['snapshots'] == []


def test_standby_and_back(logged):
    hv = logged
    hv.vm(**vm_args(hv, memory='256M'))
    pid = hv.pid('web1')
    args = vm_args(hv, memory='256M', state='standby')
    pred = hv.vm(check=True, **args)
    assert pred['changed'] and hv.pid('web1') == pid
    res = hv.vm(**args)
    assert res['changed'] and res['changes'] == pred['changes'] and res['vm']['state'] == 'standby'
    assert proc_cmdline(pid) is None and hv.pid('web1') is None
    assert not os.path.exists(os.path.join(hv.run_dir, 'web1.sock'))
    standby = os.path.join(hv.state_dir, 'vms', 'web1', 'standby')
    assert os.path.getsize(os.path.join(standby, 'memory-ranges')) == 256 << 20
    assert requests(hv.request_log, pid)[-4:] == ['vm.pause', 'vm.snapshot', 'vm.shutdown', 'vmm.shutdown']
    back_args = vm_args(hv, memory='256M')
    out = batch(hv, ('again', 'cloudhv.ch.ch_vm', args), ('present', 'cloudhv.ch.ch_vm', dict(args, state='present')),
                ('pred', 'cloudhv.ch.ch_vm', back_args, True), ('info', 'cloudhv.ch.ch_vm_info', {'name': 'web1'}))
    assert out['again']['changed'] is False and out['present']['changed'] is False
    pred = out['pred']
    assert pred['changed'] and out['info']['vms'][0]['state'] == 'standby'
    back = hv.vm(**back_args)
    assert back['changed'] and back['changes'] == pred['changes'] and back['vm']['state'] == 'running'
    new_pid = hv.pid('web1')
    assert requests(hv.request_log, new_pid) == ['vm.restore']
    assert not os.path.exists(standby)
    assert hv.vm(**back_args)['changed'] is False
    # standby again, then paused: restored without resuming
    assert hv.vm(**args)['changed'] and hv.pid('web1') is None
    paused = hv.vm(**vm_args(hv, memory='256M', state='paused'))
    assert paused['changed'] and paused['vm']['state'] == 'paused' and vm_state(hv) == 'paused'
    assert requests(hv.request_log, hv.pid('web1')) == ['vm.restore']
    bodies = restore_bodies(hv.request_log)
    assert [b.get('resume') for b in bodies] == [True, False], bodies
    assert not os.path.exists(standby)


def test_standby_refuses_to_wake_on_changed_disks(logged):
    """Standby keeps the disks in place (no copy); a disk written while the VM sleeps would not
    match its saved memory, so waking refuses, touches nothing, and stopped + running recovers."""
    hv = logged
    assert hv.vm(**vm_args(hv, state='standby'))['_rc'] != 0      # no such VM yet: refused
    hv.vm(**vm_args(hv, memory='256M'))
    assert hv.vm(**vm_args(hv, memory='256M', state='standby'))['changed']
    write_at(disk_path(hv), b'written during standby', offset=4096)
    files = hv.files()
    res = hv.vm(**vm_args(hv, memory='256M'))
    assert res['_rc'] != 0 and disk_path(hv) in res['msg'] and 'standby' in res['msg'], res
    assert res.get('option') == 'state', res
    assert hv.pid('web1') is None and hv.files() == files
    assert vm_state(hv) == 'standby'
    out = batch(hv, ('discard', 'cloudhv.ch.ch_vm', vm_args(hv, memory='256M', state='stopped')),
                ('boot', 'cloudhv.ch.ch_vm', vm_args(hv, memory='256M')))
    assert out['discard']['changed'] and out['boot']['changed'] and out['boot']['vm']['state'] == 'running'
    assert requests(hv.request_log, hv.pid('web1')) == ['vm.create', 'vm.boot']
    assert read_at(disk_path(hv), 22, offset=4096) == b'written during standby'


def test_absent_removes_what_an_interrupted_clone_left(hv):
    """A clone killed before it wrote its record leaves half-made files and its marker; absent
    removes them and reports it once, check mode predicts exactly that and touches nothing."""
    layout = Layout(hv.state_dir, hv.run_dir)
    vm_dir = os.path.join(hv.state_dir, 'vms', 'web2')
    os.makedirs(os.path.join(vm_dir, snapmod.CLONE_SOURCE))
    partial = os.path.join(vm_dir, 'root.raw')
    with open(partial, 'wb') as handle:
        handle.write(b'half a copy')
    recovery.write_marker(Vm(layout, 'web2', None, host='-'), {'op': 'clone', 'files': [partial],
                                                               'work': os.path.join(vm_dir, snapmod.CLONE_SOURCE)})
    out = batch(hv, ('predict', 'cloudhv.ch.ch_vm', {'name': 'web2', 'state': 'absent'}, True),
                ('absent', 'cloudhv.ch.ch_vm', {'name': 'web2', 'state': 'absent'}),
                ('again', 'cloudhv.ch.ch_vm', {'name': 'web2', 'state': 'absent'}),
                ('again-check', 'cloudhv.ch.ch_vm', {'name': 'web2', 'state': 'absent'}, True))
    assert out['absent']['changes'] == ['remove what an interrupted clone left in %s' % vm_dir], out['absent']
    assert out['predict']['changes'] == out['absent']['changes'], out['predict']
    assert not os.path.exists(partial) and not os.path.exists(os.path.join(vm_dir, snapmod.CLONE_SOURCE))
    assert recovery.read_marker(Vm(layout, 'web2', None, host='-')) is None
    assert out['again']['changed'] is False and out['again-check']['changed'] is False


def fill(directory):
    """Fill the filesystem of ``directory`` up."""
    with open(os.path.join(directory, 'filler'), 'wb') as handle:
        try:
            while True:
                handle.write(b'x' * 65536)
                handle.flush()
        except OSError:
            pass


def test_snapshot_on_a_full_filesystem_fails_cleanly(hv):
    hv.vm(**vm_args(hv))
    pid = hv.pid('web1')
    mnt = str(hv.tmp_path / 'small')
    os.mkdir(mnt)
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt], check=True)
    try:
        fill(mnt)
        target = os.path.join(mnt, 's1')
        res = snap(hv, path=target)
        assert res['_rc'] != 0 and res['_status'] == 'failed', res
        assert 'No space left' in res['msg'] or 'no space left' in res['msg'], res['msg']
        assert not os.path.exists(target)
        assert [f for f in os.listdir(mnt) if f != 'filler'] == []
        assert vm_state(hv) == 'running' and hv.pid('web1') == pid
        assert not os.path.exists(os.path.join(hv.state_dir, 'vms', 'web1', recovery.MARKER))
    finally:
        subprocess.run(['umount', '-l', mnt], check=False)


def test_restore_refuses_damaged_or_foreign_snapshots(hv):
    hv.vm(**vm_args(hv))
    assert snap(hv)['changed']
    pid = hv.pid('web1')
    path = os.path.join(hv.state_dir, 'vms', 'web1', 'snapshots', 's1')
    # another CH major version
    res = snap(hv, state='restored', env={'CHSIM_VERSION': '54.0.0'})
    assert res['_rc'] != 0 and 'binary' in res['msg'] and 'major' in res['msg'], res
    assert hv.pid('web1') == pid and vm_state(hv) == 'running'
    # a checksum that does not match
    state_json = os.path.join(path, 'state.json')
    with open(state_json) as handle:
        state = json.load(handle)
    state['vcpus'] = 8
    with open(state_json, 'w') as handle:
        json.dump(state, handle)
    res = snap(hv, state='restored')
    assert res['_rc'] != 0 and 'sha256' in res['msg'] and 'state.json' in res['msg'], res
    assert hv.pid('web1') == pid and vm_state(hv) == 'running'


def test_killed_mid_snapshot_is_repaired_by_the_next_run(hv):
    hv.vm(**vm_args(hv))
    pid = hv.pid('web1')
    layout = Layout(hv.state_dir, hv.run_dir)
    final = os.path.join(layout.snapshots_dir('web1'), 's1')
    partial = os.path.join(layout.snapshots_dir('web1'), '.s1.partial')
    os.makedirs(partial)
    with open(os.path.join(partial, 'config.json'), 'w') as handle:
        handle.write('{')
    # what a run killed between vm.pause and its resume leaves behind
    recovery.write_marker(Vm(layout, 'web1', None, host='-'), {'op': 'snapshot', 'tmp': partial, 'dest': final, 'was_running': True})
    with ChClient(layout.socket_path('web1')) as client:
        client.pause()
    assert vm_state(hv) == 'paused'
    res = hv.vm(**vm_args(hv))
    assert res['_rc'] == 0 and res['changed'], res
    assert any('resume the VM left paused' in c for c in res['changes']), res['changes']
    assert vm_state(hv) == 'running' and hv.pid('web1') == pid
    assert not os.path.exists(partial) and not os.path.exists(final)
    assert not os.path.exists(os.path.join(layout.vm_dir('web1'), recovery.MARKER))
    assert hv.vm(**vm_args(hv))['changed'] is False


@pytest.mark.parametrize('module,args,option,fragment', [
    ('cloudhv.ch.ch_snapshot', {'name': '../x'}, 'name', 'not a valid name'),
    ('cloudhv.ch.ch_snapshot', {'vm': 'a b'}, 'vm', 'not a valid name'),
    ('cloudhv.ch.ch_snapshot', {'state': 'restored', 'prefault': True, 'memory_restore_mode': 'ondemand'},
     'prefault', 'ondemand'),
    ('cloudhv.ch.ch_snapshot', {'state': 'restored', 'name': 'nosuch'}, 'name', 'no snapshot named nosuch'),
    ('cloudhv.ch.ch_snapshot', {'vm': 'nosuchvm'}, 'vm', 'no VM named nosuchvm'),
    ('cloudhv.ch.ch_vm', {'name': 'web2', 'clone_from': {'vm': 'ghost'}}, 'clone_from.vm', 'no VM named ghost'),
    ('cloudhv.ch.ch_vm', {'name': 'web2', 'clone_from': {'vm': 'web1', 'snapshot': 's1', 'prefault': True,
                                                         'memory_restore_mode': 'ondemand'}},
     'clone_from.prefault', 'ondemand'),
    ('cloudhv.ch.ch_vm', {'name': 'web2', 'clone_from': {'vm': 'web1', 'snapshot': 'nosuch'}},
     'clone_from.snapshot', 'no snapshot'),
])
def test_bad_input_fails_clearly_and_touches_nothing(hv, module, args, option, fragment):
    hv.vm(**vm_args(hv))
    pid = hv.pid('web1')
    full = {'vm': 'web1', 'name': 's1'} if module.endswith('ch_snapshot') else {}
    full.update(args)
    before = hv.files()
    res = task(hv, module, full)
    assert res['_rc'] != 0 and res['_status'] == 'failed', res
    assert option in res['msg'] and fragment in res['msg'], res['msg']
    assert hv.files() == before
    assert hv.pid('web1') == pid and vm_state(hv) == 'running'


def test_restore_refused_by_ch_puts_the_disks_back(hv, monkeypatch):
    """Engine level: CH refusing vm.restore leaves the VM stopped with its own disks, not half-done."""
    from ansible_collections.cloudhv.ch.plugins.module_utils.errors import ChApiError, StateError
    from ansible_collections.cloudhv.ch.plugins.module_utils.snapshot_engine import SnapshotManager
    hv.vm(**vm_args(hv))
    assert snap(hv)['changed']
    disk = disk_path(hv)
    write_at(disk, b'after-snapshot')
    pid = hv.pid('web1')

    def refuse(self, *args, **kwargs):
        raise ChApiError('vm.restore', 500, ['Cannot restore VM', 'simulated refusal'])
    monkeypatch.setattr(ChClient, 'restore', refuse)
    params = dict(hv.defaults, vm='web1', name='s1', state='restored', path=None, include_disks=True,
                  resume=True, memory_restore_mode='copy', prefault=False, api_timeout=30)
    with pytest.raises(StateError) as exc:
        SnapshotManager(params).run()
    assert 'simulated refusal' in exc.value.msg and 'put back' in exc.value.msg
    assert read_at(disk, 14) == b'after-snapshot'
    assert proc_cmdline(pid) is None and hv.pid('web1') is None
    assert vm_state(hv) == 'stopped'
    assert not [f for f in os.listdir(os.path.dirname(disk)) if f.startswith('.')]
    assert not os.path.exists(os.path.join(Layout(hv.state_dir, hv.run_dir).vm_dir('web1'), recovery.MARKER))
    monkeypatch.undo()
    assert hv.vm(**vm_args(hv))['vm']['state'] == 'running'
