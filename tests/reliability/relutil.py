"""Helpers for the fault-injection suite (issue 7): a private host (state_dir, run_dir, payloads,
optionally a network namespace) driven through real ansible / ansible-playbook runs against the
CH simulator, plus what the tests need to look at it from the outside (processes, taps, records,
the simulator's request log) and to interrupt runs (SIGKILL of ansible-playbook's process group).

Imported by package path (tests.reliability.relutil), so it never collides with other suites'
conftest modules. The fixtures wrapping it are in conftest.py.
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import yaml

from ansible_collections.cloudhv.ch.plugins.module_utils.process import proc_cmdline
from tests.support.ansible import BIN, ansible_env, run_adhoc, run_playbook
from tests.support.sim import stand_in_payloads

HERE = os.path.dirname(os.path.abspath(__file__))
SNAPSHOT_CALLBACKS = os.path.join(HERE, 'callback')


def wait_for(predicate, timeout=30.0, interval=0.05, what='condition'):
    """Poll ``predicate`` until it returns something true; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError('timed out after %.0f s waiting for %s' % (timeout, what))
        time.sleep(interval)


def read_requests(path):
    """The simulator's request log: [{t, pid, method, endpoint, status}] (written after each request)."""
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def ip_json(netns, *args):
    argv = ['ip'] + (['-n', netns] if netns else []) + ['-j'] + list(args)
    return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True, timeout=20).stdout or '[]')


def taps(netns):
    """{tap name: master} of the collection's taps (chv + 12 hex) in ``netns``."""
    return dict((l['ifname'], l.get('master')) for l in ip_json(netns, 'link', 'show')
                if l['ifname'].startswith('chv') and len(l['ifname']) == 15)


class Host(object):
    """One test's private host. ``env`` holds simulator knobs for the VMMs the modules launch."""

    def __init__(self, tmp_path, binary, netns=None, state_dir=None, jail=False):
        self.tmp_path = tmp_path
        self.binary = binary
        self.netns = netns
        # short: socket paths must stay under 108 bytes
        self.jail = tempfile.mkdtemp(prefix='chv-rel-')
        if jail:
            # state_dir and run_dir side by side in a directory of their own, so that a path that
            # escapes either of them still lands where a snapshot of the jail sees it
            self.state_dir = os.path.join(self.jail, 'state')
            self.run_dir = os.path.join(self.jail, 'run')
            os.mkdir(self.run_dir, 0o700)
        else:
            self.state_dir = state_dir or str(tmp_path / 'state')
            self.run_dir = self.jail
        self.kernel, self.firmware = stand_in_payloads(tmp_path)
        self.env = {}
        self.request_log = str(tmp_path / 'requests.jsonl')
        self.spawned = []

    # -- running Ansible ----------------------------------------------------------------------
    @property
    def defaults(self):
        return {'binary': self.binary, 'state_dir': self.state_dir, 'run_dir': self.run_dir}

    def _env(self, env):
        merged = dict(self.env)
        merged.update(env or {})
        return merged

    def _play_extra(self):
        return {'module_defaults': {'group/cloudhv.ch.ch': self.defaults}}

    def play(self, tasks, check=False, diff=True, env=None, args=(), timeout=300):
        return run_playbook(self.tmp_path, tasks=tasks, check=check, diff=diff, env=self._env(env),
                            netns=self.netns, play_extra=self._play_extra(), args=args, timeout=timeout)

    def task(self, module, args, check=False, env=None, diff=True):
        """Run one task; its result dict with ``_rc`` and ``_status`` (ok / failed)."""
        res = self.play([{'name': 't', module: args}], check=check, env=env, diff=diff)
        out = res.task('t')
        out['_rc'] = res.rc
        out['_status'] = [r['status'] for r in res.results if r['task'] == 't'][-1]
        return out

    def converge(self, module, args, env=None, info_before=False):
        """One playbook: (ch_vm_info,) the task, the same task again, then ch_vm_info. Returns
        (first result, second result, {name: vm info after}[, {name: vm info before}]); the first
        run must succeed and the second change nothing."""
        tasks = [{'name': 'first', module: args}, {'name': 'again', module: args},
                 {'name': 'info', 'cloudhv.ch.ch_vm_info': {}}]
        if info_before:
            tasks.insert(0, {'name': 'info before', 'cloudhv.ch.ch_vm_info': {}})
        res = self.play(tasks, env=env)
        first, again = res.task('first'), res.task('again')
        assert res.rc == 0, res
        assert again['changed'] is False, again
        out = (first, again, dict((vm['name'], vm) for vm in res.task('info')['vms']))
        if info_before:
            out += (dict((vm['name'], vm) for vm in res.task('info before')['vms']),)
        return out

    def vm(self, check=False, env=None, **args):
        return self.task('cloudhv.ch.ch_vm', args, check=check, env=env)

    def info(self, name=None):
        res = self.play([{'name': 'info', 'cloudhv.ch.ch_vm_info': {'name': name} if name else {}}])
        return res.task('info')['vms']

    def state(self, name):
        vms = self.info(name)
        return vms[0]['state'] if vms else 'absent'

    def adhoc(self, module, args, env=None, check=False, timeout=300):
        """`ansible localhost -m MODULE -a '<JSON>'` with the host's defaults merged in."""
        full = dict(self.defaults)
        full.update(args)
        return run_adhoc(self.tmp_path, module, json.dumps(full), check=check, env=self._env(env),
                         netns=self.netns, timeout=timeout)

    def spawn_playbook(self, tasks, env=None):
        """Start ansible-playbook in a session of its own (so its whole process group can be
        SIGKILLed); returns the Popen. Output goes to files next to the playbook."""
        tag = uuid.uuid4().hex[:8]
        play = {'name': 'spawned', 'hosts': 'localhost', 'connection': 'local', 'gather_facts': False,
                'tasks': tasks}
        play.update(self._play_extra())
        playbook = str(self.tmp_path / ('spawned-%s.yml' % tag))
        with open(playbook, 'w') as handle:
            yaml.safe_dump([play], handle, sort_keys=False)
        cmd = [os.path.join(BIN, 'ansible-playbook'), playbook, '-i', 'localhost,']
        if self.netns:
            cmd = ['ip', 'netns', 'exec', self.netns] + cmd
        out = open(str(self.tmp_path / ('spawned-%s.out' % tag)), 'w')
        try:
            proc = subprocess.Popen(cmd, env=ansible_env(self.tmp_path, self._env(env)), cwd=str(self.tmp_path),
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        finally:
            out.close()
        self.spawned.append(proc)
        return proc

    def interrupt(self, tasks, endpoint, method='PUT', env=None, timeout=90):
        """Run ``tasks`` and SIGKILL ansible-playbook's whole process group as soon as the
        simulator has logged ``method endpoint`` (the module is then inside the operation: with
        CHSIM_DELAY the next PUT is still in flight). Returns the requests logged meanwhile."""
        env = self._env(env)
        assert env.get('CHSIM_REQUEST_LOG') == self.request_log, 'set CHSIM_REQUEST_LOG in host.env'
        start = len(read_requests(self.request_log))
        proc = self.spawn_playbook(tasks, env)

        def seen():
            if proc.poll() is not None:
                raise AssertionError('ansible-playbook ended (rc %s) before %s %s was logged'
                                     % (proc.returncode, method, endpoint))
            new = read_requests(self.request_log)[start:]
            return new if any(r['method'] == method and r['endpoint'] == endpoint for r in new) else None
        try:
            return wait_for(seen, timeout=timeout, interval=0.01, what='%s %s' % (method, endpoint))
        finally:
            kill_group(proc)

    # -- looking at the host ------------------------------------------------------------------
    def path(self, *parts):
        return os.path.join(self.state_dir, *parts)

    def vm_dir(self, name):
        return self.path('vms', name)

    def socket(self, name):
        return os.path.join(self.run_dir, '%s.sock' % name)

    def pid_file(self, name):
        return os.path.join(self.run_dir, '%s.pid' % name)

    def pid(self, name):
        try:
            with open(self.pid_file(name)) as handle:
                return int(handle.read())
        except (IOError, OSError, ValueError):
            return None

    def record(self, name):
        """The VM's record, parsed (a half-written record fails the test here), or None."""
        path = os.path.join(self.vm_dir(name), 'vm.json')
        if not os.path.exists(path):
            return None
        with open(path) as handle:
            return json.load(handle)

    def vmm_pids(self, name=None):
        """Pids of live processes serving an API socket in run_dir (of VM ``name`` when given)."""
        want = self.socket(name) if name else self.run_dir + '/'
        found = []
        for entry in os.listdir('/proc'):
            if not entry.isdigit():
                continue
            argv = proc_cmdline(int(entry))
            if argv and '--api-socket' in argv and any(want in a for a in argv):
                found.append(int(entry))
        return sorted(found)

    def temp_files(self):
        """Temporary or partial files left anywhere under state_dir and run_dir."""
        out = []
        for top in (self.state_dir, self.run_dir):
            for root, dirs, files in os.walk(top):
                for entry in dirs + files:
                    if entry.endswith(('.tmp', '.partial')) or '.tmp.' in entry:
                        out.append(os.path.join(root, entry))
        return out

    def cleanup(self):
        for proc in self.spawned:
            kill_group(proc)
        mine = (self.run_dir + '/', self.state_dir + '/')
        for pid in self._processes(mine):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(self.jail, ignore_errors=True)

    @staticmethod
    def _processes(needles):
        found = []
        for entry in os.listdir('/proc'):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            argv = proc_cmdline(int(entry))
            if argv and any(n in a for a in argv for n in needles):
                found.append(int(entry))
        return found


def _children():
    """{ppid: [pid, ...]} of every process."""
    tree = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as handle:
                stat = handle.read()
        except (IOError, OSError):
            continue
        ppid = int(stat[stat.rindex(')') + 2:].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _is_vmm(pid):
    argv = proc_cmdline(pid)
    return bool(argv) and '--api-socket' in argv


def _run_tree(root):
    """``root`` and its descendants, except VMMs (and what they started)."""
    tree = _children()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid != root and _is_vmm(pid):
            continue
        found.append(pid)
        todo.extend(tree.get(pid, []))
    return found


def kill_group(proc):
    """SIGKILL an ansible run: the process (started with start_new_session=True), its group, and
    every process it started except the VMMs. ansible-core's workers call setsid(), so the module
    processes are not in ansible-playbook's process group; they are killed too, as a crash of the
    controller machine would end them. The VMMs run in sessions of their own and survive, as
    they would on a real host. Everything is frozen (SIGSTOP) first, so nothing forks meanwhile."""
    if proc.poll() is None:
        stopped = set()
        while True:
            pids = [p for p in _run_tree(proc.pid) if p not in stopped]
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGSTOP)
                except OSError:
                    pass
                stopped.add(pid)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass


def pid_gone(pid):
    return proc_cmdline(pid) is None


def _ip(*args, check=True):
    return subprocess.run(['ip'] + list(args), capture_output=True, text=True, check=check, timeout=30)


def new_netns(bridge='br0'):
    """A namespace with lo up and, when ``bridge`` is set, that bridge (up)."""
    name = 'chvr-%s' % uuid.uuid4().hex[:8]
    _ip('netns', 'add', name)
    try:
        _ip('-n', name, 'link', 'set', 'lo', 'up')
        if bridge:
            _ip('-n', name, 'link', 'add', bridge, 'type', 'bridge')
            _ip('-n', name, 'link', 'set', bridge, 'up')
    except Exception:
        remove_netns(name)
        raise
    return name


def remove_netns(name):
    for pid in _ip('netns', 'pids', name, check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    _ip('netns', 'del', name, check=False)
