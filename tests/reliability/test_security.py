"""Security properties: sockets 0600 and state directories 0700 owned by the running user (also
for what the VMM itself creates, with a VMM that, like CH, leaves modes to the umask it gets);
cloud-init user data (the one no_log value) never in results, diffs, logs or -vvv output, nor in
any file but the cloud-init image itself; names cannot escape state_dir/run_dir. (That the install
role refuses unverified artifacts, changing nothing, is in test_bad_inputs.py's role cases.)"""
import json
import os
import stat
import sys

import pytest

from tests.reliability.callback.host_snapshot import take
from tests.reliability.relutil import Host

SIM_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'simulator')

# The simulator binds its API socket under umask 0177. This stand-in keeps whatever umask it was
# started with instead (os.umask becomes a no-op), as a VMM that does nothing about modes would.
UMASK_LAUNCHER = """#!{python}
import os
import sys
_real_umask = os.umask


def _keep(mask):
    current = _real_umask(0)
    _real_umask(current)
    return current


os.umask = _keep
sys.path.insert(0, {sim_dir!r})
import chsim
sys.exit(chsim.main())
"""


@pytest.fixture
def umask_host(tmp_path, netns):
    binary = str(tmp_path / 'bin' / 'cloud-hypervisor')
    os.makedirs(os.path.dirname(binary))
    with open(binary, 'w') as handle:
        handle.write(UMASK_LAUNCHER.format(python=sys.executable, sim_dir=SIM_DIR))
    os.chmod(binary, 0o755)
    host = Host(tmp_path, binary, netns=netns, state_dir=str(tmp_path / 'var' / 'state'))
    old = os.umask(0o022)         # what ansible runs get here: a permissive, common umask
    try:
        yield host
    finally:
        os.umask(old)
        host.cleanup()


def mode(path):
    st = os.lstat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid


def test_modes_and_owners(umask_host):
    host = umask_host
    os.rmdir(host.run_dir)        # let the collection create it, too
    args = {'name': 'web1', 'kernel': host.kernel, 'serial': 'file', 'console': 'socket',
            'disks': [{'path': os.path.join(host.vm_dir('web1'), 'root.raw'), 'size': '16M'}],
            'networks': [{'bridge': 'br0'}], 'vsock': {'cid': 7},
            'cloud_init': {'user_data': {'packages': ['nginx']}}}
    res = host.play([{'name': 'vm', 'cloudhv.ch.ch_vm': args},
                     {'name': 'snap', 'cloudhv.ch.ch_snapshot': {'vm': 'web1', 'name': 's1'}}])
    assert res.rc == 0, res
    uid = os.getuid()
    sockets = [os.path.join(host.run_dir, f) for f in os.listdir(host.run_dir) if f.endswith('.sock')]
    sockets.append(os.path.join(host.vm_dir('web1'), 'vsock.sock'))
    assert host.socket('web1') in sockets and len(sockets) >= 3
    wrong = []
    for path in sockets:
        assert stat.S_ISSOCK(os.lstat(path).st_mode), path
        if mode(path) != (0o600, uid):
            wrong.append((path, oct(mode(path)[0])))
    for top in (host.state_dir, host.run_dir):
        for root, dirs, files in os.walk(top):
            if mode(root) != (0o700, uid):
                wrong.append((root, oct(mode(root)[0])))
            for name in files:
                path = os.path.join(root, name)
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode) and (stat.S_IMODE(st.st_mode) & 0o077 or st.st_uid != uid):
                    wrong.append((path, oct(stat.S_IMODE(st.st_mode))))
    assert wrong == [], '\n'.join('%s %s' % w for w in wrong)


SECRET = 'hunter2-Zq8-top-secret'


def test_user_data_never_leaks(host_ns):
    host = host_ns
    log = str(host.tmp_path / 'ansible.log')
    env = {'ANSIBLE_LOG_PATH': log}
    base = {'name': 'web1', 'kernel': host.kernel, 'networks': [{'bridge': 'br0'}]}
    as_dict = dict(base, cloud_init={'user_data': {'users': [{'name': 'ops', 'passwd': SECRET}],
                                                   'write_files': [{'path': '/etc/x', 'content': SECRET + '-2'}]}})
    as_text = dict(base, cloud_init={'user_data': '#cloud-config\npassword: %s-3\nchpasswd: {expire: false}\n' % SECRET})
    broken = dict(base, cloud_init={'user_data': '#cloud-config\npassword: %s-4\n  oops: [\n' % SECRET})
    tasks = [
        {'name': 'create', 'cloudhv.ch.ch_vm': as_dict},
        {'name': 'again', 'cloudhv.ch.ch_vm': as_dict},
        {'name': 'predict', 'cloudhv.ch.ch_vm': as_text, 'check_mode': True},
        {'name': 'change', 'cloudhv.ch.ch_vm': as_text},
        {'name': 'broken', 'cloudhv.ch.ch_vm': broken, 'ignore_errors': True},
        {'name': 'snap', 'cloudhv.ch.ch_snapshot': {'vm': 'web1', 'name': 's1'}},
        {'name': 'clone', 'cloudhv.ch.ch_vm': {'name': 'web2', 'clone_from': {'vm': 'web1', 'snapshot': 's1'}}},
        {'name': 'info', 'cloudhv.ch.ch_vm_info': {}},
        {'name': 'stop', 'cloudhv.ch.ch_vm': dict(as_text, state='stopped')},
        {'name': 'role', 'ansible.builtin.include_role': {'name': 'cloudhv.ch.vms'},
         'vars': {'cloudhv_binary': host.binary, 'cloudhv_state_dir': host.state_dir, 'cloudhv_run_dir': host.run_dir,
                  'cloudhv_vms': [dict(base, name='web3', cloud_init={'user_data': {'passwd': SECRET + '-5'}}),
                                  dict(base, name='web4', cloud_init={'user_data': '#cloud-config\npasswd: %s-6\n' % SECRET})]}},
        # refused by AnsibleModule's own checks, and by the role's argument spec
        {'name': 'wrong type', 'cloudhv.ch.ch_vm': dict(as_dict, name='web5', cpus='two'), 'ignore_errors': True},
        {'name': 'role refused', 'block': [
            {'name': 'role again', 'ansible.builtin.include_role': {'name': 'cloudhv.ch.vms'},
             'vars': {'cloudhv_vms': [dict(base, name='web6', cpus='two', cloud_init={'user_data': {'passwd': SECRET + '-7'}})]}}],
         'rescue': [{'name': 'refused', 'ansible.builtin.debug': {'msg': 'refused'}}]},
    ]
    res = host.play(tasks, env=env, args=('-vvv',))
    assert res.rc == 0, res
    statuses = dict((r['task'], r['status']) for r in res.results)
    assert statuses['broken'] == 'failed' and 'cloud_init.user_data' in res.task('broken')['msg']
    assert statuses['wrong type'] == 'failed' and 'cpus' in res.task('wrong type')['msg']
    assert 'refused' in statuses
    assert res.task('change')['changed'] and res.task('predict')['changed']
    assert res.task('predict')['diff']['before']['spec']['cloud_init']['digest'] != \
        res.task('predict')['diff']['after']['spec']['cloud_init']['digest']
    seen = {'results and diffs': json.dumps(res.results), 'stdout (-vvv)': res.stdout, 'stderr': res.stderr}
    with open(log) as handle:
        seen['ANSIBLE_LOG_PATH'] = handle.read()
    assert seen['ANSIBLE_LOG_PATH'] and 'ch_vm' in seen['stdout (-vvv)']
    images = []
    for top in (host.state_dir, host.run_dir):
        for root, _dirs, files in os.walk(top):
            for name in files:
                path = os.path.join(root, name)
                if name.endswith('.iso'):
                    images.append(path)      # the cloud-init image (and its copies) must hold it
                    continue
                if os.path.isfile(path) and os.path.getsize(path) < (16 << 20):
                    with open(path, 'rb') as handle:
                        seen[path] = handle.read().decode('latin-1')
    leaks = dict((where, text[text.index(SECRET) - 300:text.index(SECRET) + 100])
                 for where, text in seen.items() if SECRET in text)
    assert leaks == {}, json.dumps(leaks, indent=1)
    assert images, 'no cloud-init image found'
    for vm, suffix in (('web1', '-3'), ('web3', '-5'), ('web4', '-6')):    # it did reach the guests
        with open(os.path.join(host.vm_dir(vm), 'cidata.iso'), 'rb') as handle:
            assert (SECRET + suffix).encode() in handle.read(), vm


ESCAPES = [
    ('cloudhv.ch.ch_vm', {'name': '../../escaped', 'kernel': '{kernel}'}),
    ('cloudhv.ch.ch_vm', {'name': '../../escaped', 'state': 'absent', 'purge': True}),
    ('cloudhv.ch.ch_vm', {'name': '/tmp/escaped', 'state': 'absent', 'purge': True}),
    ('cloudhv.ch.ch_vm_info', {'name': '../../escaped'}),
    ('cloudhv.ch.ch_snapshot', {'vm': '../../escaped', 'name': 's1', 'state': 'absent'}),
    ('cloudhv.ch.ch_snapshot', {'vm': 'web1', 'name': '../../../../escaped', 'state': 'absent'}),
    ('cloudhv.ch.ch_vm', {'name': 'web2', 'clone_from': {'vm': '../../escaped', 'snapshot': 's1'}}),
]


def test_names_cannot_escape(tmp_path, sim_binary):
    """Names that would resolve outside state_dir/run_dir (into a decoy VM directory next to
    them, holding a record and a snapshot) are refused, and nothing changes anywhere."""
    host = Host(tmp_path, sim_binary, jail=True)
    try:
        decoy = os.path.join(host.jail, 'escaped')
        os.makedirs(os.path.join(decoy, 'snapshots', 's1'))
        for path in (os.path.join(decoy, 'vm.json'), os.path.join(decoy, 'snapshots', 's1', 'manifest.json')):
            with open(path, 'w') as handle:
                json.dump({'name': 'escaped'}, handle)
        tasks = [{'name': 'escape%d' % i, module: dict((k, v.format(kernel=host.kernel) if isinstance(v, str) else v)
                                                       for k, v in args.items()), 'ignore_errors': True}
                 for i, (module, args) in enumerate(ESCAPES)]
        before = take([host.jail])
        res = host.play(tasks)
        assert take([host.jail]) == before
        statuses = dict((r['task'], r['status']) for r in res.results)
        for index in range(len(ESCAPES)):
            result = res.task('escape%d' % index)
            assert statuses['escape%d' % index] == 'failed', (ESCAPES[index], result)
            assert 'not a valid name' in result['msg'], (ESCAPES[index], result)
    finally:
        host.cleanup()
