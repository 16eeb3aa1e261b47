"""ch_vms driven through real ansible-playbook runs against the simulator.

Every state-changing case: check mode before, run, run again (not changed), check mode after.
"""
import os
import stat
import tempfile

from tests.support.ansible import run_playbook


def item(hv, name, **extra):
    args = {'name': name, 'kernel': hv.kernel, 'cmdline': 'console=ttyS0'}
    args.update(extra)
    return args


def vms(hv, check=False, diff=True, env=None, **args):
    """One ch_vms task; its result dict with _rc and _status."""
    return hv.task('cloudhv.ch.ch_vms', check=check, diff=diff, env=env, **args)


def converge(hv, **args):
    """check mode before, run, run again, check mode after; returns (prediction, first real result)."""
    files_before = hv.files()
    pred = vms(hv, check=True, **args)
    assert pred['_rc'] == 0, pred
    assert hv.files() == files_before, 'check mode changed files'
    first = vms(hv, **args)
    assert first['_rc'] == 0, first
    assert first['changed'] == pred['changed'], (pred, first)
    assert first['changes'] == pred['changes'], (pred['changes'], first['changes'])
    assert first['restart_required'] == pred['restart_required']
    assert first['pruned'] == pred['pruned']
    assert first['diff'] == pred['diff'] or _same_diff_states(first['diff'], pred['diff'])
    second = vms(hv, **args)
    assert second['_rc'] == 0, second
    assert second['changed'] is False, second['changes']
    assert all(c == [] for c in second['changes'].values()), second['changes']
    assert second['diff']['before'] == second['diff']['after']
    assert second['pruned'] == []
    again = vms(hv, check=True, **args)
    assert again['changed'] is False, again['changes']
    return pred, first


def _same_diff_states(one, two):
    return all(one[side][n]['state'] == two[side][n]['state'] for side in ('before', 'after') for n in one[side])


def states(hv):
    return dict((vm['name'], vm['state']) for vm in hv.info())


def test_create_live_change_absent_and_prune_are_idempotent(hv):
    names = ['v%d' % i for i in range(5)]
    _pred, first = converge(hv, vms=[item(hv, n, max_cpus=2) for n in names], parallel=3)
    assert sorted(first['vms']) == names
    assert all(first['changes'][n] == ['start the VM'] for n in names), first['changes']
    assert all(first['vms'][n]['state'] == 'running' and first['vms'][n]['pid'] for n in names)
    assert first['diff']['before']['v0']['state'] == 'absent'
    assert first['diff']['after']['v0']['state'] == 'running'
    assert states(hv) == dict((n, 'running') for n in names)
    pids = dict((n, hv.pid(n)) for n in names)

    # a live change on a subset (v0: vCPUs resized in the running VMM), a restart-only change (v1),
    # a run-state change (v3); v2 and v4 stay as they are
    changed = [item(hv, n) for n in names]
    changed[0]['cpus'] = 2
    changed[1]['memory'] = '1G'       # RAM above what was plugged: recorded, restart required
    changed[3]['state'] = 'stopped'
    _pred, first = converge(hv, vms=changed)
    assert first['changes']['v0'] == ['resize vCPUs 1 -> 2'], first['changes']
    assert first['changes']['v3'] == ['stop the VM'], first['changes']
    assert first['restart_required'] == ['v1'], first
    assert [n for n in names if first['changes'][n]] == ['v0', 'v1', 'v3'], first['changes']
    assert hv.pid('v0') == pids['v0'] and hv.pid('v1') == pids['v1'] and hv.pid('v3') is None

    # absent items, and prune of the undeclared ones (v4), while the others stay as they are
    final = [item(hv, 'v0'), item(hv, 'v1', state='absent'), item(hv, 'v2')]
    _pred, first = converge(hv, vms=final, prune=True)
    assert sorted(first['pruned']) == ['v3', 'v4']
    assert first['vms']['v1'] == {'name': 'v1', 'state': 'absent'}
    assert first['vms']['v4']['state'] == 'absent'
    assert states(hv) == {'v0': 'running', 'v2': 'running'}
    # prune removes without purge: the pruned VMs' directories (logs) stay
    assert os.path.isdir(os.path.join(hv.state_dir, 'vms', 'v4'))


def test_prune_never_touches_another_state_dir(hv):
    other = dict(hv.defaults, state_dir=str(hv.tmp_path / 'other-state'), run_dir=tempfile.mkdtemp(prefix='chv-run2-'))
    res = hv.play([{'name': 'other', 'cloudhv.ch.ch_vm': dict(item(hv, 'theirs'), **other)}])
    assert res.task('other')['changed'] is True
    first = vms(hv, vms=[item(hv, 'mine'), item(hv, 'gone')])
    assert first['_rc'] == 0, first
    pred = vms(hv, check=True, vms=[item(hv, 'mine')], prune=True)
    assert pred['pruned'] == ['gone'] and pred['changed'] is True
    first = vms(hv, vms=[item(hv, 'mine')], prune=True)
    assert first['pruned'] == ['gone']
    assert states(hv) == {'mine': 'running'}
    where = {'state_dir': other['state_dir'], 'run_dir': other['run_dir']}
    theirs = hv.play([{'name': 'i', 'cloudhv.ch.ch_vm_info': where}]).task('i')['vms']
    assert [(v['name'], v['state']) for v in theirs] == [('theirs', 'running')]
    hv.play([{'name': 'rm', 'cloudhv.ch.ch_vm': dict(item(hv, 'theirs', state='absent', purge=True), **other)}])


def test_bad_item_fails_naming_it_and_touches_nothing(hv):
    first = vms(hv, vms=[item(hv, 'ok1')])
    assert first['_rc'] == 0
    before = hv.files()
    cases = [
        ([item(hv, 'ok1', cpus=2), item(hv, 'new1'), item(hv, 'bad', memory='lots')], 'vms[2].memory'),
        ([item(hv, 'ok1', state='stopped'), item(hv, 'bad', cpus='two')], 'vms[1].cpus'),
        ([item(hv, 'new1'), item(hv, 'bad', memroy='1G')], 'vms[1].memroy'),
        ([item(hv, 'new1'), item(hv, 'new1')], 'vms[1].name'),
        ([item(hv, 'new1'), {'name': 'bad', 'disks': [{'path': '/nonexistent/x.raw'}]}], 'vms[1].'),
        ([item(hv, 'new1'), item(hv, 'bad', kernel=str(hv.tmp_path / 'no-such-kernel'))], 'vms[1].kernel'),
        ([item(hv, 'new1'), item(hv, 'bad', state_dir='/tmp/x')], 'vms[1].state_dir'),
    ]
    for items, option in cases:
        out = vms(hv, vms=items)
        assert out['_rc'] != 0 and out['_status'] == 'failed', out
        assert option in out['msg'], (option, out['msg'])
        assert hv.files() == before, 'a bad item changed files (%s)' % option
        assert states(hv) == {'ok1': 'running'}


def test_a_vmm_that_fails_to_start_fails_only_its_vm(hv):
    broken = str(hv.tmp_path / 'broken-ch')
    with open(broken, 'w') as handle:
        handle.write('#!/bin/sh\necho "cannot start: broken on purpose" >&2\nexit 1\n')
    os.chmod(broken, stat.S_IRWXU)
    items = [item(hv, 'a1'), item(hv, 'bad', binary=broken), item(hv, 'a2'), item(hv, 'a3')]
    out = vms(hv, vms=items, parallel=2)
    assert out['_rc'] != 0 and out['_status'] == 'failed', out
    assert [f['name'] for f in out['failed_vms']] == ['bad'], out['failed_vms']
    assert 'bad' in out['msg'] and 'broken on purpose' in out['failed_vms'][0]['msg']
    assert sorted(out['vms']) == ['a1', 'a2', 'a3']
    assert all(out['vms'][n]['state'] == 'running' for n in ('a1', 'a2', 'a3'))
    assert states(hv) == {'a1': 'running', 'a2': 'running', 'a3': 'running'}   # nothing left of 'bad'
    # fixed, the next run converges it and only it
    items[1] = item(hv, 'bad')
    out = vms(hv, vms=items)
    assert out['_rc'] == 0 and [n for n, c in out['changes'].items() if c] == ['bad']


def test_clone_follows_its_source_and_user_data_stays_secret(hv):
    secret = 'hunter2-very-secret'
    items = [item(hv, 'src', cloud_init={'user_data': {'password': secret}}),
             item(hv, 'copy', clone_from={'vm': 'src'})]
    # listed before its source: still converged after it
    out = vms(hv, vms=list(reversed(items)))
    assert out['_rc'] == 0, out
    assert out['vms']['copy']['state'] == 'running'
    assert any('clone' in c or 'fork' in c for c in out['changes']['copy']), out['changes']
    res = hv.play([{'name': 'vms', 'cloudhv.ch.ch_vms': {'vms': items}}], args=['-vvv'])
    assert res.rc == 0
    assert secret not in res.stdout and secret not in str(res.results)
    assert res.task('vms')['changed'] is False


def test_playbook_with_role_style_defaults(hv):
    """module_defaults of the group apply to ch_vms (it is in the action group)."""
    res = run_playbook(hv.tmp_path, tasks=[{'name': 'vms', 'cloudhv.ch.ch_vms': {'vms': [item(hv, 'g1')]}}],
                       play_extra={'module_defaults': {'group/cloudhv.ch.ch': hv.defaults}})
    assert res.rc == 0, res
    assert res.task('vms')['vms']['g1']['api_socket'].startswith(hv.run_dir)
