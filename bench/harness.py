"""Helpers for the benchmarks (noop.py, profile_noop.py, peer_libvirt.py, scale.py, api_economy.py, multihost.py):
running Ansible the way a user does, reading the simulator's request log, installing missing
Debian packages, and cleaning up on every way out (including SIGTERM/SIGHUP).
"""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from common import COLLECTIONS, REPO, setup_paths, simulator

BIN = os.path.dirname(os.path.abspath(sys.executable))     # the venv that runs the benchmark
BUILD = os.path.join(REPO, 'build')
BENCH_COLLECTIONS = os.path.join(BUILD, 'bench-collections')
TARGET_VENV = os.path.join(BUILD, 'target-venv')
CALLBACKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'callback_plugins')
# The tasks of a play that converges `cloudhv_vms` with a ch_vm loop (what the vms role does,
# for when it is not there); scale.py and multihost.py put their own play header on top.
CH_VM_LOOP_TASKS = """  tasks:
    - name: Converge the VMs
      cloudhv.ch.ch_vm:
        name: "{{ item.name }}"
        state: "{{ item.state | default(omit) }}"
        purge: "{{ item.purge | default(omit) }}"
        kernel: "{{ item.kernel | default(omit) }}"
        binary: "{{ cloudhv_binary }}"
        state_dir: "{{ cloudhv_state_dir }}"
        run_dir: "{{ cloudhv_run_dir }}"
      loop: "{{ cloudhv_vms }}"
      loop_control:
        label: "{{ item.name }}"
"""


def need_root():
    if os.geteuid() != 0:
        raise SystemExit('%s needs root (it runs VMMs, namespaces or daemons)' % sys.argv[0])


def apt_install(packages):
    """Install the Debian packages of `packages` that are missing (none: no apt call at all)."""
    missing = []
    for package in packages:
        proc = subprocess.run(['dpkg-query', '-W', '-f=${Status}', package],
                              capture_output=True, text=True, check=False)
        if 'install ok installed' not in proc.stdout:
            missing.append(package)
    if missing:
        print('installing Debian packages: %s' % ' '.join(missing), flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
        subprocess.run(['apt-get', 'update', '-qq'], env=env, check=True)
        subprocess.run(['apt-get', 'install', '-y', '-qq', '--no-install-recommends'] + missing,
                       env=env, check=True)
    return missing


def target_python():
    """The module interpreter of the benchmarks. A managed host has the collection's runtime
    requirements, not our dev tools (rich, click, ... which httpx would import for its CLI):
    modules run in a venv with requirements.txt only."""
    python = os.path.join(TARGET_VENV, 'bin', 'python')
    if not os.path.exists(python):
        subprocess.run([sys.executable, '-m', 'venv', TARGET_VENV], check=True)
        subprocess.run([python, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', '-r',
                        os.path.join(REPO, 'requirements.txt')], check=True)
    return python


def ansible_env(interpreter, **extra):
    setup_paths()
    env = dict(os.environ)
    env.update({
        'ANSIBLE_COLLECTIONS_PATH': os.pathsep.join([COLLECTIONS, BENCH_COLLECTIONS]),
        'ANSIBLE_PYTHON_INTERPRETER': interpreter,
        'ANSIBLE_LOCALHOST_WARNING': '0',
        'ANSIBLE_INVENTORY_UNPARSED_WARNING': '0',
        'ANSIBLE_HOST_KEY_CHECKING': '0',
        'ANSIBLE_RETRY_FILES_ENABLED': '0',
        'ANSIBLE_NOCOLOR': '1',
    })
    env.update(dict((k, str(v)) for k, v in extra.items()))
    return env


def timed(cmd, env, expect=None, cwd=None):
    """Run a command; return (seconds, stdout). Fail loudly on a non-zero exit, or when `expect`
    (a string such as 'CHANGED' or 'SUCCESS' of ad hoc output) is not in the output."""
    elapsed, _cpu, stdout = timed_cpu(cmd, env, expect, cwd)
    return elapsed, stdout


def timed_cpu(cmd, env, expect=None, cwd=None):
    """Like timed(), also returning the CPU seconds (user + system) of the command's process tree:
    every descendant that was waited for (Ansible reaps its workers and module processes; detached
    VMMs and daemons such as libvirtd are not counted). Less sensitive to a busy machine than wall
    time. Returns (seconds, cpu seconds, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, cwd=cwd)
    elapsed = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0 or (expect and expect not in proc.stdout):
        raise RuntimeError('command failed (rc %d, expected %r): %s\n--- stdout\n%s\n--- stderr\n%s'
                           % (proc.returncode, expect, ' '.join(cmd), proc.stdout[-3000:],
                              proc.stderr[-3000:]))
    return elapsed, cpu, proc.stdout


def adhoc(module, args, inventory='localhost,', host='localhost'):
    """An ad hoc command line; `args` is a k=v string or a dict (passed as JSON, which ad hoc
    accepts, for values with spaces or quotes)."""
    if isinstance(args, dict):
        args = json.dumps(args)
    return [os.path.join(BIN, 'ansible'), host, '-i', inventory, '-c', 'local', '-m', module, '-a', args]


def playbook(path, inventory='localhost,', forks=None, extra=()):
    cmd = [os.path.join(BIN, 'ansible-playbook'), '-i', inventory, path]
    if forks:
        cmd += ['--forks', str(forks)]
    return cmd + list(extra)


def read_requests(path):
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_timing(path):
    """Events of callback_plugins/bench_timing.py."""
    return read_requests(path)


class Cleanup(object):
    """A stack of clean-up actions run in reverse order, once, on every way out: normal end,
    exception, Ctrl-C, SIGTERM or SIGHUP (turned into SystemExit so `finally` blocks run)."""

    def __init__(self):
        self.actions = []
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._signal)

    @staticmethod
    def _signal(signum, _frame):
        raise SystemExit('interrupted by signal %d; cleaning up' % signum)

    def add(self, func, *args, **kwargs):
        self.actions.append((func, args, kwargs))

    def rmtree(self, path):
        self.add(shutil.rmtree, path, ignore_errors=True)

    def run(self):
        # Signals must not interrupt the clean-up itself.
        old = dict((sig, signal.signal(sig, signal.SIG_IGN)) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT))
        try:
            while self.actions:
                func, args, kwargs = self.actions.pop()
                try:
                    func(*args, **kwargs)
                except Exception as exc:  # keep cleaning up
                    print('cleanup: %s%r failed: %s' % (getattr(func, '__name__', func), args, exc),
                          file=sys.stderr)
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)


def bench_host(prefix, cleanup):
    """A temp work dir (removed by `cleanup`, which also kills what runs from it) holding the CH
    simulator and a stand-in kernel: returns (work, binary, kernel)."""
    work = tempfile.mkdtemp(prefix=prefix)
    cleanup.rmtree(work)
    cleanup.add(kill_pids_under, work)
    binary = simulator(work)
    kernel = os.path.join(work, 'vmlinux')
    with open(kernel, 'w') as handle:
        handle.write('stand-in kernel')
    return work, binary, kernel


def no_validation_spec(work):
    """A CHSIM_SPEC that points nowhere: the simulator then skips validating request bodies
    against the OpenAPI spec (a start-up cost real CH does not have)."""
    return os.path.join(work, 'no-spec-so-no-validation.yaml')


def stop_process(proc, timeout=10):
    """SIGTERM, then SIGKILL, a Popen we started; reaps it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kill_pids_under(directory):
    """SIGKILL the processes whose command line mentions `directory` (a temp dir this run created,
    so only our own simulators and ssh masters match); returns how many there were."""
    mark = directory.encode()
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as handle:
                if mark in handle.read():
                    found.append(int(entry))
        except OSError:
            continue
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return len(found)


def fmt_ms(seconds):
    return '%.0f ms' % (seconds * 1000.0)


def load_line():
    """The machine is shared: say how busy it was (1/5/15-minute load averages at the end of the run)."""
    one, five, fifteen = os.getloadavg()
    return 'load average at the end (1/5/15 min): %.1f %.1f %.1f on %d CPUs' % (one, five, fifteen, os.cpu_count() or 0)
