"""Run ansible-playbook / ansible ad hoc as a user would, and read back every task result.

    res = run_playbook(tmp_path, tasks=[{...}], check=False, diff=True)
    res.rc, res.results (list of dicts: task, host, action, status, result), res.stdout
    res.task('name')  -> the result dict of the (last) task with that name
    res = run_adhoc(tmp_path, 'cloudhv.ch.ch_host_info', 'binary=/x', check=True)
    res.result -> the module result dict of the single host

The collection is found through build/collections (see tests/conftest.py); the interpreter is
the test's own Python (interpreter discovery would pick a missing pyenv python here).
"""
import json
import os
import subprocess
import sys
import uuid

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(REPO, 'build', 'collections')
CALLBACKS = os.path.join(REPO, 'tests', 'support', 'callback')
BIN = os.path.dirname(sys.executable)
# The modules' interpreter: the test's own Python, or CLOUDHV_TEST_MODULE_PYTHON (e.g. Debian's
# /usr/bin/python3 with its python3-httpx/-pyroute2/-pycdlib: scripts/test.sh runs a part of the
# suite that way, so the lower bounds in requirements.txt are what is really tested)
MODULE_PYTHON = os.environ.get('CLOUDHV_TEST_MODULE_PYTHON') or sys.executable


class RunResult(object):
    def __init__(self, proc, results):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.results = results

    def task(self, name, host=None):
        found = [r for r in self.results if r['task'] == name and (host is None or r['host'] == host)]
        if not found:
            raise KeyError("no result for task %r; tasks seen: %s\n%s\n%s" % (
                name, [r['task'] for r in self.results], self.stdout[-3000:], self.stderr[-3000:]))
        return found[-1]['result']

    @property
    def result(self):
        if not self.results:
            raise AssertionError("no task result; rc=%s\nstdout:%s\nstderr:%s" % (
                self.rc, self.stdout[-3000:], self.stderr[-3000:]))
        return self.results[-1]['result']

    def __repr__(self):
        return 'RunResult(rc=%s, results=%s)' % (self.rc, json.dumps(self.results, indent=1)[:4000])


def ansible_env(tmp_path, extra=None):
    env = dict(os.environ)
    env.update({
        'ANSIBLE_COLLECTIONS_PATH': COLLECTIONS,
        'ANSIBLE_CALLBACK_PLUGINS': CALLBACKS,
        'ANSIBLE_CALLBACKS_ENABLED': 'results_file',
        'ANSIBLE_LOAD_CALLBACK_PLUGINS': '1',
        'ANSIBLE_PYTHON_INTERPRETER': MODULE_PYTHON,
        'ANSIBLE_LOCALHOST_WARNING': '0',
        'ANSIBLE_INVENTORY_UNPARSED_WARNING': '0',
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_RETRY_FILES_ENABLED': '0',
        'ANSIBLE_LOCAL_TEMP': str(tmp_path / '.ansible-tmp'),
        'ANSIBLE_HOME': str(tmp_path / '.ansible-home'),
        'CLOUDHV_RESULTS_FILE': str(tmp_path / ('results-%s.jsonl' % uuid.uuid4().hex)),
        'PATH': BIN + os.pathsep + env.get('PATH', ''),
    })
    if extra:
        env.update(extra)
    return env


def _read_results(path):
    results = []
    if os.path.exists(path):
        with open(path) as handle:
            results = [json.loads(line) for line in handle if line.strip()]
        os.unlink(path)
    return results


def _run(cmd, tmp_path, env_extra=None, timeout=300, netns=None):
    env = ansible_env(tmp_path, env_extra)
    if netns:
        cmd = ['ip', 'netns', 'exec', netns] + cmd
    path = env['CLOUDHV_RESULTS_FILE']
    if os.path.exists(path):
        os.unlink(path)
    proc = subprocess.run(cmd, env=env, cwd=str(tmp_path), capture_output=True, text=True, check=False,
                          timeout=timeout)
    return RunResult(proc, _read_results(path))


def run_playbook(tmp_path, tasks=None, playbook=None, hosts='localhost', check=False, diff=False,
                 extra_vars=None, env=None, gather_facts=False, inventory=None, args=(),
                 play_extra=None, timeout=300, netns=None):
    """Run a playbook: either a list of tasks (wrapped in a play on localhost) or a file.
    With ``netns``, ansible-playbook itself runs inside that network namespace."""
    if playbook is None:
        play = {'name': 'test', 'hosts': hosts, 'gather_facts': gather_facts, 'tasks': tasks}
        if hosts == 'localhost':
            play['connection'] = 'local'
        play.update(play_extra or {})
        playbook = str(tmp_path / 'test-playbook.yml')
        with open(playbook, 'w') as handle:
            yaml.safe_dump([play], handle, sort_keys=False)
    cmd = [os.path.join(BIN, 'ansible-playbook'), playbook,
           '-i', inventory or 'localhost,']
    if check:
        cmd.append('--check')
    if diff:
        cmd.append('--diff')
    if extra_vars:
        cmd += ['-e', json.dumps(extra_vars)]
    cmd += list(args)
    return _run(cmd, tmp_path, env, timeout, netns)


def run_adhoc(tmp_path, module, module_args='', check=False, diff=False, env=None, args=(),
              timeout=300, netns=None):
    """`ansible localhost -m MODULE -a ARGS` with a local connection (inside ``netns`` if given)."""
    if not isinstance(module_args, str):
        module_args = json.dumps(module_args)
    cmd = [os.path.join(BIN, 'ansible'), 'localhost', '-i', 'localhost,', '-c', 'local',
           '-m', module, '-a', module_args]
    if check:
        cmd.append('--check')
    if diff:
        cmd.append('--diff')
    cmd += list(args)
    return _run(cmd, tmp_path, env, timeout, netns)
