"""roles/vms (networks, then VMs, pruning, restarts), playbooks/snapshot.yml, and playbooks/site.yml
in check mode on a fresh host. Each test runs its plays inside a throwaway network namespace with
the CH simulator (the stand-in mirror's launcher) as the binary."""
import os
import subprocess

import yaml

from tests.roles.conftest import changed, run_role
from tests.support.ansible import REPO, run_playbook


def inventory(tmp_path, mirror, run_dir, **host_vars):
    """An inventory with localhost in `hypervisors`, its dirs under tmp_path (run_dir short)."""
    root, digests = mirror
    hv = {'ansible_connection': 'local',
          'cloudhv_binary': root + '/cloud-hypervisor/releases/download/v53.0/cloud-hypervisor-static',
          'cloudhv_firmware_dir': root + '/rust-hypervisor-firmware/releases/download/0.5.0',
          'cloudhv_state_dir': str(tmp_path / 'state'), 'cloudhv_run_dir': run_dir}
    hv.update(host_vars)
    path = tmp_path / 'inventory.yml'
    path.write_text(yaml.safe_dump({'hypervisors': {'hosts': {'localhost': hv}}}))
    return str(path)


def vm(name, **extra):
    out = {'name': name, 'firmware': '{{ cloudhv_firmware_dir }}/hypervisor-fw', 'memory': '128M',
           'networks': [{'bridge': 'chvtest0'}]}
    out.update(extra)
    return out


NETWORKS = [{'name': 'chvtest0', 'addresses': ['10.79.0.1/24']}]


def results(res, suffix):
    found = [r for r in res.results if r['task'].endswith(suffix)]
    assert found, (suffix, [r['task'] for r in res.results], res.stdout[-2000:])
    return found[-1]['result']


def test_vms_converge_restart_prune_and_snapshot(tmp_path, mirror, netns, short_dir):
    inv = inventory(tmp_path, mirror, short_dir)
    vms = [vm('a1', disks=[{'path': str(tmp_path / 'state' / 'vms' / 'a1' / 'data.raw'), 'size': '16M'}]),
           vm('b1', disks=[{'path': str(tmp_path / 'state' / 'vms' / 'b1' / 'data.raw'), 'size': '16M'}]),
           vm('c1', state='stopped', disks=[{'path': str(tmp_path / 'state' / 'vms' / 'c1' / 'data.raw'),
                                             'size': '16M'}])]

    def run(extra=None, check=False):
        variables = {'cloudhv_networks': NETWORKS, 'cloudhv_vms': vms}
        variables.update(extra or {})
        return run_role(tmp_path, 'vms', variables, check=check, netns=netns, inventory=inv, hosts='hypervisors')

    res = run()
    assert res.rc == 0, res.stdout[-3000:]
    # one ch_vms task converges them all
    out = results(res, 'Converge the VMs')
    assert list(out['vms']) == ['a1', 'b1', 'c1']
    assert all(out['changes'][n] for n in ('a1', 'b1', 'c1'))
    assert [out['vms'][n]['state'] for n in ('a1', 'b1', 'c1')] == ['running', 'running', 'stopped']
    for check in (False, True):
        res = run(check=check)
        assert res.rc == 0 and changed(res) == [], (check, changed(res))

    # a rolling restart restarts the VMs declared running, and only those
    res = run({'cloudhv_vms_restart': True})
    assert res.rc == 0, res.stdout[-3000:]
    restarted = [n for n, c in results(res, 'Converge the VMs')['changes'].items() if c]
    assert restarted == ['a1', 'b1']

    # the snapshot playbook: every running VM of the group, once per name
    snap = {'cloudhv_snapshot_name': 'before-test'}
    for expect in (True, False):
        res = run_playbook(tmp_path, playbook=os.path.join(REPO, 'playbooks', 'snapshot.yml'), inventory=inv,
                           extra_vars=snap, netns=netns)
        assert res.rc == 0, res.stdout[-3000:]
        done = results(res, 'Snapshot each running or paused VM')['results']
        assert [r['item'] for r in done] == ['a1', 'b1'] and all(r['changed'] == expect for r in done)
    assert os.path.isdir(str(tmp_path / 'state' / 'vms' / 'a1' / 'snapshots' / 'before-test'))

    # pruning: only with cloudhv_prune_vms; the pruned VM's files stay unless cloudhv_prune_purge
    vms = vms[:2]
    res = run()
    assert res.rc == 0 and changed(res) == [], 'an undeclared VM is left alone by default'
    extra = {'name': 'chvextra0', 'addresses': ['10.80.0.1/24']}
    res = run({'cloudhv_prune_vms': True, 'cloudhv_networks': NETWORKS + [extra]})
    assert res.rc == 0, res.stdout[-3000:]
    assert results(res, 'Converge the VMs')['pruned'] == ['c1']
    assert results(res, 'Converge the VMs')['changes']['c1'], 'pruned by ch_vms (no purge)'
    assert subprocess.run(['ip', '-n', netns, 'link', 'show', 'chvextra0'], check=False).returncode == 0
    assert not os.path.exists(str(tmp_path / 'state' / 'vms' / 'c1' / 'vm.json'))
    assert os.path.exists(str(tmp_path / 'state' / 'vms' / 'c1' / 'data.raw')), 'not purged'
    vms = vms[:1]
    res = run({'cloudhv_prune_vms': True, 'cloudhv_prune_purge': True,
               'cloudhv_networks': NETWORKS + [dict(extra, state='absent')]})
    assert res.rc == 0, res.stdout[-3000:]
    assert [r['item']['name'] for r in results(res, 'Remove the networks declared absent')['results']
            if r['changed']] == ['chvextra0']
    assert subprocess.run(['ip', '-n', netns, 'link', 'show', 'chvextra0'], capture_output=True,
                          check=False).returncode != 0
    assert not os.path.exists(str(tmp_path / 'state' / 'vms' / 'b1')), 'purged'
    assert results(res, 'Converge the VMs')['vms']['b1'] == {'name': 'b1', 'state': 'absent'}
    assert os.path.exists(str(tmp_path / 'state' / 'vms' / 'a1' / 'vm.json'))


def test_site_check_mode_on_a_fresh_host_changes_nothing(tmp_path, mirror, netns, short_dir):
    """Check mode of the whole site playbook before anything is installed: install predicts its
    files, preflight does not fail on the binary check mode did not install, vms reports the VMs that
    wait for the bridge and firmware of this run."""
    root, digests = mirror
    inv = inventory(tmp_path, mirror, short_dir,
                    cloudhv_binary=str(tmp_path / 'bin' / 'cloud-hypervisor'),
                    cloudhv_bin_dir=str(tmp_path / 'bin'), cloudhv_firmware_dir=str(tmp_path / 'fw'),
                    cloudhv_mirror_url='file://' + root, cloudhv_checksums=digests,
                    cloudhv_networks=NETWORKS, cloudhv_vms=[vm('a1'), vm('b1', networks=[])])
    res = run_playbook(tmp_path, playbook=os.path.join(REPO, 'playbooks', 'site.yml'), inventory=inv,
                       check=True, netns=netns)
    assert res.rc == 0, res.stdout[-3000:]
    waiting = results(res, 'Report the VMs a real run would create once what they need exists (check mode)')
    assert {r['item']['key'] for r in waiting['results']} == {'a1', 'b1'}
    assert all(r['changed'] for r in waiting['results'])
    assert 'not installed yet (check mode)' in results(res, 'Show what the host offers')['msg']
    assert not (tmp_path / 'bin').exists() and not (tmp_path / 'state').exists()


def test_argument_specs_reject_wrong_variables_before_anything_runs(tmp_path):
    cases = [
        ('install', {'cloudhv_setcap': 'sometimes'},
         "argument 'cloudhv_setcap' is of type str and we were unable to convert to bool"),
        ('install', {'cloudhv_checksums': ['sha256:00']},
         "argument 'cloudhv_checksums' is of type list and we were unable to convert to dict"),
        ('install', {'cloudhv_python_deps': 'conda'},
         'value of cloudhv_python_deps must be one of: auto, distro, pip, none, got: conda'),
        ('preflight', {'cloudhv_require_nested': 'maybe'},
         "argument 'cloudhv_require_nested' is of type str and we were unable to convert to bool"),
        ('vms', {'cloudhv_vms': [{'name': 'a', 'cpus': 'two'}]},
         "argument 'cpus' is of type str found in 'cloudhv_vms'. and we were unable to convert to int"),
        ('vms', {'cloudhv_vms': [{'name': 'a', 'memroy': '1G'}]},
         'cloudhv_vms.memroy. Supported parameters include'),
        ('vms', {'cloudhv_vms': [{'name': 'a', 'disks': [{'size': '1G'}]}]},
         'missing required arguments: path found in cloudhv_vms -> disks'),
        ('vms', {'cloudhv_networks': [{'addresses': ['10.0.0.1/24']}]},
         'missing required arguments: name found in cloudhv_networks'),
        ('vms', {'cloudhv_vms': [{'name': 'a', 'state': 'gone'}]},
         'value of state must be one of: running, present, stopped, paused, restarted, absent, standby, got: gone'),
    ]
    # each case in a block: its rescue takes over when the arguments are refused, so the role's
    # other tasks never run (and with these wrong variables they must not)
    tasks = [{'name': 'case %d' % i,
              'block': [{'name': 'role', 'ansible.builtin.include_role': {'name': 'cloudhv.ch.' + role},
                         'vars': variables}],
              'rescue': [{'name': 'refused', 'ansible.builtin.debug': {'msg': 'refused'}}]}
             for i, (role, variables, _msg) in enumerate(cases)]
    res = run_playbook(tmp_path, tasks=tasks)
    assert res.rc == 0, res.stdout[-3000:]
    validations = [r for r in res.results if 'Validating arguments against arg spec' in r['task']]
    assert len(validations) == len(cases), [r['task'] for r in res.results]
    for (role, variables, msg), result in zip(cases, validations):
        assert result['status'] == 'failed', (role, variables)
        assert result['result']['msg'].startswith('Validation of arguments failed:'), result['result']['msg']
        assert msg in result['result']['msg'], (msg, result['result']['msg'])
    ran = set(r['task'] for r in res.results) - set(r['task'] for r in validations) - {'refused', 'role'}
    assert ran == set(), 'no task of a role runs after its arguments are refused: %s' % ran
