"""The real Cloud Hypervisor against the CH simulator, side by side in one process (issue 12,
deliverable 5). Both sides run the same steps, alternating (the side that goes first changes every
round), and the script prints medians and the ratio real/simulator of each:

* launch: the bare `cloud-hypervisor --api-socket` to the first vmm.ping against vmm.py's
  Vmm.launch to the first ping (bench/launch.py's two functions), the overhead in ms and ratio;
* create+boot: an ad hoc `ch_vm` run creating and booting a VM (real CH: the test guest of
  tests/support/testguest.py, whose serial marker is then awaited, untimed; the simulator: the
  stand-in kernel the other benches use);
* no-change: a no-change ad hoc `ch_vm` run on that running VM against `ansible.builtin.ping`;
* stop: the ACPI-ignored escalation (`ch_vm state=stopped stop_timeout=2`; the test guest ignores
  ACPI, the simulator is started with CHSIM_IGNORE_ACPI=1) and its split: the same ladder run
  in-process by the engine (VmEngine) with its steps timed, so the wait for stop_timeout is
  measured apart from the rest; a graceful stop (the guest honours the power button) is measured
  on the simulator only: the test guest ignores ACPI, so on real CH it is not measurable;
* create+boot, snapshot, restore and clone also through the engine in this process (VmEngine,
  SnapshotManager, as the modules call them), which leaves out Ansible's fixed cost: on a loaded
  machine that cost swings by seconds and hides the VMM's share of an ad hoc run;
* snapshot, restore, clone (`ch_snapshot present`, `ch_snapshot restored`, `ch_vm clone_from`):
  tried once on CH_BINARY, where this host's KVM (kvm_pvm, no nested state) makes stock v53.0
  refuse vm.snapshot: the result is CH's message, not a number. They are timed against the
  simulator with CH_BINARY_SNAPSHOT (or --snapshot-binary), meant for a v53.0 built with the local
  nested-state workaround (KVM_GET_NESTED_STATE's EINVAL taken as "no nested state"); the output
  labels those numbers so.

The simulator runs without request validation (CHSIM_SPEC pointing nowhere, as in clone.py and
scale.py): its OpenAPI validator is a start-up cost real CH does not have.

It refuses to run unless CH_BINARY is an ELF executable (the real binary, not the simulator), and
runs itself inside a throwaway network namespace (no VM here has a NIC either), so nothing touches
the host network. Everything lives in one temp dir, removed with every VMM started from it, also
on failure or a signal. Needs root and a read-write /dev/kvm.

Run: CH_BINARY=/path/to/cloud-hypervisor [CH_BINARY_SNAPSHOT=/path/to/cloud-hypervisor-with-workaround]
     .venv/bin/python bench/real_ch.py [rounds] [--snapshot-binary PATH]
"""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

from common import REPO, machine, median_ms, setup_paths
from harness import (Cleanup, adhoc, ansible_env, bench_host, load_line, need_root,
                     no_validation_spec, target_python, timed)
from launch import bare, ours

setup_paths()
sys.path.insert(0, REPO)
from ansible_collections.cloudhv.ch.plugins.module_utils import api as apimod  # noqa: E402
from ansible_collections.cloudhv.ch.plugins.module_utils import vmm as vmmmod  # noqa: E402
from ansible_collections.cloudhv.ch.plugins.module_utils.vm_engine import VmEngine  # noqa: E402
from ansible_collections.cloudhv.ch.plugins.module_utils.snapshot_engine import SnapshotManager  # noqa: E402
from tests.real_ch.realch import _is_elf, host_problems, read_text  # noqa: E402
from tests.support import testguest  # noqa: E402
from tests.support.netns import throwaway_netns  # noqa: E402

NETNS_MARK = 'CLOUDHV_BENCH_NETNS'
STOP_TIMEOUT = 2
LAUNCH_ROUNDS = 10
WORKAROUND = 'v53.0 with the local nested-state workaround'


class Side(object):
    """One VMM binary with its own state_dir/run_dir and the VM options that boot on it."""

    def __init__(self, key, label, binary, kernel, work):
        self.key, self.label, self.binary, self.kernel = key, label, binary, kernel
        self.simulated = not _is_elf(binary)
        self.state_dir = os.path.join(work, key, 's')
        self.run_dir = os.path.join(work, key, 'r')
        self.samples = {}

    def base(self):
        return {'binary': self.binary, 'state_dir': self.state_dir, 'run_dir': self.run_dir}

    def vm(self, name, **extra):
        args = dict(self.base(), name=name, kernel=self.kernel, cmdline='console=ttyS0', memory='128M')
        args.update(extra)
        return args

    def add(self, key, seconds):
        self.samples.setdefault(key, []).append(seconds)

    def med(self, key):
        values = self.samples.get(key)
        return median_ms(values) if values else None

    def serial(self, name):
        return os.path.join(self.state_dir, 'vms', name, 'serial.log')


def result_of(stdout):
    """The result dict of an ad hoc run's output (`host | STATUS => {...}`)."""
    return json.loads(stdout[stdout.index('=> ') + 3:])


def ch_message(result):
    """A failed module's message without CH's stack backtrace."""
    return (result.get('msg') or json.dumps(result)).split('\n\nStack backtrace')[0].strip()


def run(module, args, env):
    """An ad hoc run that may fail: (rc, result dict)."""
    proc = subprocess.run(adhoc(module, args), env=env, capture_output=True, text=True, check=False)
    try:
        return proc.returncode, result_of(proc.stdout)
    except ValueError:
        return proc.returncode, {'msg': (proc.stdout + proc.stderr)[-2000:]}


def remove_vm(side, name, env):
    run('cloudhv.ch.ch_vm', dict(side.base(), name=name, state='absent', purge=True, force=True), env)


def wait_marker(side, name, timeout=30.0):
    """The test guest runs once its serial log shows its marker or a tick (a restored or cloned guest
    goes on ticking without printing the marker again). Untimed: after the ch_vm run."""
    deadline = time.monotonic() + timeout
    while True:
        text = read_text(side.serial(name))
        if testguest.MARKER in text or testguest.ticks(text):
            return
        if time.monotonic() > deadline:
            raise RuntimeError('%s: the test guest printed neither %r nor a tick within %ss'
                               % (name, testguest.MARKER, timeout))
        time.sleep(0.1)


@contextlib.contextmanager
def environ(**values):
    """os.environ with `values` set (a VMM started in-process inherits it)."""
    old = dict((k, os.environ.get(k)) for k in values)
    os.environ.update(dict((k, str(v)) for k, v in values.items()))
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def ladder_clock():
    """Times the stop ladder's steps inside the engine: yields a list of (event, start, end)."""
    marks = []
    saved = [(vmmmod.Vmm, '_wait_exit')] + [(apimod.ChClient, n) for n in ('power_button', 'shutdown', 'vmm_shutdown')]
    originals = [(owner, attr, getattr(owner, attr)) for owner, attr in saved]

    def wrap(attr, func):
        def timed_call(self, *args, **kwargs):
            start = time.monotonic()
            try:
                return func(self, *args, **kwargs)
            finally:
                marks.append((attr, start, time.monotonic()))
        return timed_call
    for owner, attr, func in originals:
        setattr(owner, attr, wrap(attr, func))
    try:
        yield marks
    finally:
        for owner, attr, func in originals:
            setattr(owner, attr, func)


def engine_ladder(side, name):
    """Boot a VM whose guest ignores ACPI through the engine, then converge it to stopped with the
    ladder's steps timed; record total, wait for stop_timeout, and what follows the wait."""
    params = side.vm(name, stop_timeout=STOP_TIMEOUT)
    with environ(CHSIM_IGNORE_ACPI=1):
        start = time.monotonic()
        VmEngine(params).converge('running')
        side.add('engine_create', time.monotonic() - start)
    if not side.simulated:
        wait_marker(side, name)
    try:
        with ladder_clock() as marks:
            start = time.monotonic()
            VmEngine(params).converge('stopped')
            end = time.monotonic()
        events = [m[0] for m in marks]
        if events[:2] != ['power_button', '_wait_exit'] or 'shutdown' not in events:
            raise RuntimeError('%s: unexpected stop ladder %s (expected the power button, the wait, then '
                               'vm.shutdown)' % (name, events))
        waited = marks[1]
        side.add('ladder', end - start)
        side.add('ladder_wait', waited[2] - waited[1])
        side.add('ladder_after', marks[-1][2] - waited[2])     # vm.shutdown + vmm.shutdown -> VMM gone
        side.add('ladder_before', marks[0][1] - start)          # record, vm.info, up to the power button
    finally:
        VmEngine(dict(side.base(), name=name, purge=True, force=True)).converge('absent')


def progress(text):
    print('[%s] %s' % (time.strftime('%H:%M:%S'), text), file=sys.stderr, flush=True)


def lifecycle_round(side, index, env, ping_first):
    progress('round %d, %s: create, no-change, ping, stop' % (index, side.label))
    name = '%s-%d' % (side.key, index)
    vm = side.vm(name)
    ignoring = dict(env, CHSIM_IGNORE_ACPI='1')     # the simulated guest ignores ACPI (real: ignored)
    side.add('create', timed(adhoc('cloudhv.ch.ch_vm', vm), ignoring, expect='CHANGED')[0])
    if not side.simulated:
        wait_marker(side, name)
    for which in ((0, 1) if ping_first else (1, 0)):
        if which:
            side.add('noop', timed(adhoc('cloudhv.ch.ch_vm', vm), env, expect='SUCCESS')[0])
        else:
            side.add('ping', timed(adhoc('ansible.builtin.ping', ''), env, expect='SUCCESS')[0])
    stop = dict(side.base(), name=name, state='stopped', stop_timeout=STOP_TIMEOUT)
    side.add('escalate', timed(adhoc('cloudhv.ch.ch_vm', stop), env, expect='CHANGED')[0])
    if side.simulated:   # a guest that honours the power button: the graceful stop
        timed(adhoc('cloudhv.ch.ch_vm', dict(vm, state='running')), env, expect='CHANGED')
        side.add('graceful', timed(adhoc('cloudhv.ch.ch_vm', stop), env, expect='CHANGED')[0])
    remove_vm(side, name, env)
    engine_ladder(side, '%s-l%d' % (side.key, index))


def snapshot_round(side, vm, index, env):
    progress('round %d, %s: snapshot, restore, clone' % (index, side.label))
    snap = dict(side.base(), vm=vm, name='s%d' % index)
    clone = dict(side.base(), name='%s-c%d' % (side.key, index), clone_from={'vm': vm, 'snapshot': snap['name']})
    side.add('snapshot', timed(adhoc('cloudhv.ch.ch_snapshot', dict(snap, state='present')), env, expect='CHANGED')[0])
    side.add('restore', timed(adhoc('cloudhv.ch.ch_snapshot', dict(snap, state='restored')), env, expect='CHANGED')[0])
    side.add('clone', timed(adhoc('cloudhv.ch.ch_vm', clone), env, expect='CHANGED')[0])
    side.add('ping', timed(adhoc('ansible.builtin.ping', ''), env, expect='SUCCESS')[0])   # this phase's floor
    if not side.simulated:
        wait_marker(side, clone['name'])
    remove_vm(side, clone['name'], env)
    timed(adhoc('cloudhv.ch.ch_snapshot', dict(snap, state='absent')), env, expect='CHANGED')


def engine_snapshot_round(side, vm, index):
    """The same three steps through the engine in this process (SnapshotManager, VmEngine), as
    ch_snapshot and ch_vm run them, without Ansible's fixed cost."""
    snap = dict(side.base(), vm=vm, name='e%d' % index)
    name = '%s-e%d' % (side.key, index)
    steps = (('engine_snapshot', lambda: SnapshotManager(dict(snap, state='present')).run()),
             ('engine_restore', lambda: SnapshotManager(dict(snap, state='restored')).run()),
             ('engine_clone', lambda: VmEngine(dict(side.base(), name=name, clone_from={
                 'vm': vm, 'snapshot': snap['name']})).converge('running')))
    try:
        for key, step in steps:
            start = time.monotonic()
            result = step()
            side.add(key, time.monotonic() - start)
            if not result.get('changed'):
                raise RuntimeError('%s: %s changed nothing: %s' % (side.label, key, result))
        if not side.simulated:
            wait_marker(side, name)
    finally:
        VmEngine(dict(side.base(), name=name, purge=True, force=True)).converge('absent')
        SnapshotManager(dict(snap, state='absent')).run()


def stock_snapshot(side, env):
    """What ch_snapshot present and a fork (clone_from a running VM) do on CH_BINARY."""
    name = '%s-snap' % side.key
    timed(adhoc('cloudhv.ch.ch_vm', side.vm(name)), env, expect='CHANGED')
    wait_marker(side, name)
    try:
        rc, present = run('cloudhv.ch.ch_snapshot', dict(side.base(), vm=name, name='s', state='present'), env)
        rc_fork, fork = run('cloudhv.ch.ch_vm', dict(side.base(), name='%s-fork' % side.key,
                                                     clone_from={'vm': name}), env)
        _rc, info = run('cloudhv.ch.ch_vm_info', dict(side.base(), name=name), env)
        state = (info.get('vms') or [{}])[0].get('state')
        return rc, present, rc_fork, fork, state
    finally:
        remove_vm(side, '%s-fork' % side.key, env)
        remove_vm(side, name, env)


def over_ping(side, key):
    """Median over the rounds of (the step - ansible.builtin.ping of the same round and side): the
    step without Ansible's fixed cost, and less swayed by the load of the moment than the step."""
    return median_ms([step - ping for step, ping in zip(side.samples[key], side.samples['ping'])])


def pair(label, real, sim, key, floor=True):
    r, s = real.med(key), sim.med(key)
    line = '%-44s real %8.1f ms   simulator %8.1f ms   real/sim %5.2f' % (label, r, s, r / s)
    if floor and key != 'ping':
        line += '   over ping: real %+7.1f ms, simulator %+7.1f ms' % (over_ping(real, key), over_ping(sim, key))
    return line


def report_launch(samples):
    lines = ['launch (%d rounds, alternating; bench/launch.py\'s bare and vmm.launch):' % LAUNCH_ROUNDS]
    over = {}
    for key, label in (('real', 'real CH'), ('sim', 'simulator')):
        b, o = median_ms(samples[key, 'bare']), median_ms(samples[key, 'ours'])
        over[key] = o - b
        lines.append('  %-10s bare -> first ping %6.1f ms   vmm.launch -> first ping %6.1f ms   '
                     'overhead %+6.1f ms   ratio %.2f' % (label, b, o, o - b, o / b))
    lines.append('  real/sim: bare start %.2f, vmm.launch %.2f'
                 % (median_ms(samples['real', 'bare']) / median_ms(samples['sim', 'bare']),
                    median_ms(samples['real', 'ours']) / median_ms(samples['sim', 'ours'])))
    return lines


def main():
    argv = sys.argv[1:]
    snap_binary = os.environ.get('CH_BINARY_SNAPSHOT')
    if '--snapshot-binary' in argv:
        at = argv.index('--snapshot-binary')
        snap_binary = argv[at + 1]
        del argv[at:at + 2]
    rounds = int(argv[0]) if argv else 3
    binary = os.environ.get('CH_BINARY')
    if not binary:
        raise SystemExit('bench/real_ch.py: CH_BINARY is not set; set it to the real cloud-hypervisor '
                         '(v53.0) binary, e.g. CH_BINARY=/usr/local/bin/cloud-hypervisor')
    need_root()
    for variable, path in (('CH_BINARY', binary), ('CH_BINARY_SNAPSHOT', snap_binary)):
        if path and not _is_elf(path):
            raise SystemExit('bench/real_ch.py: %s=%s is not an ELF executable (the CH simulator?); this '
                             'bench compares a real Cloud Hypervisor with the simulator' % (variable, path))
        problems = [p for p in host_problems(path) if 'CAP_NET_ADMIN' not in p] if path else []
        if problems:
            raise SystemExit('bench/real_ch.py: %s' % '; '.join(problems))
    interpreter = target_python()      # built (pip) before leaving the host network
    if not os.environ.get(NETNS_MARK):
        with throwaway_netns('chvbench') as netns:
            child = subprocess.Popen(['ip', 'netns', 'exec', netns, sys.executable, os.path.abspath(__file__)]
                                     + sys.argv[1:], env=dict(os.environ, **{NETNS_MARK: netns}))
            # The child cleans up (harness.Cleanup) on SIGTERM/SIGHUP, passed on, and on Ctrl-C, which
            # the terminal sends it too: this process waits for that clean-up before the namespace goes.
            for sig in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            raise SystemExit(child.wait())
    measure(binary, snap_binary, rounds, interpreter)


def measure(binary, snap_binary, rounds, interpreter):
    started = time.monotonic()
    load_before = os.getloadavg()
    cleanup = Cleanup()
    work, sim_binary, sim_kernel = bench_host('chv-bench-real-', cleanup)
    os.environ['CHSIM_SPEC'] = no_validation_spec(work)          # the VMMs inherit it
    guest = testguest.write(os.path.join(work, 'guest.elf'))
    real = Side('real', 'real CH', binary, guest, work)
    sim = Side('sim', 'simulator', sim_binary, sim_kernel, work)
    snap_real = Side('snap', WORKAROUND, snap_binary, guest, work) if snap_binary else None
    snap_sim = Side('snapsim', 'simulator', sim_binary, sim_kernel, work)
    env = ansible_env(interpreter)
    version = subprocess.run([binary, '--version'], capture_output=True, text=True, check=False).stdout.split('\n')[0]
    out = ['machine: %s' % machine(),
           'network namespace: %s (no VM has a NIC)' % os.environ.get(NETNS_MARK),
           'load average at the start (1/5/15 min): %.1f %.1f %.1f' % load_before,
           'real CH: %s (%s); simulator: tests/simulator, request validation off; module interpreter %s'
           % (binary, version, interpreter),
           '%d rounds, alternating (the side going first changes every round); guest: the test guest '
           '(real), the stand-in kernel (simulator); 128M, 1 vCPU' % rounds]
    try:
        samples = dict(((k, w), []) for k in ('real', 'sim') for w in ('bare', 'ours'))
        for index in range(LAUNCH_ROUNDS):
            order = (('real', binary), ('sim', sim_binary))
            for key, path in (order if index % 2 == 0 else order[::-1]):
                directory = os.path.join(work, 'launch-' + key)
                os.makedirs(directory, exist_ok=True)
                sock = os.path.join(directory, 'vm.sock')
                samples[key, 'bare'].append(bare(path, sock))
                samples[key, 'ours'].append(ours(path, sock, directory))
        out += report_launch(samples)
        for index in range(rounds):
            for side in ((real, sim) if index % 2 == 0 else (sim, real)):
                lifecycle_round(side, index, env, ping_first=index % 2 == 1)
        out += [
            pair('create+boot (ad hoc ch_vm state=running)', real, sim, 'create'),
            '  ' + pair('engine only (VmEngine converge running)', real, sim, 'engine_create', floor=False),
            pair('no-change ad hoc ch_vm', real, sim, 'noop'),
            pair('ansible.builtin.ping (same rounds)', real, sim, 'ping'),
            '  no-change/ping: real CH %.3f, simulator %.3f'
            % (real.med('noop') / real.med('ping'), sim.med('noop') / sim.med('ping')),
            'stop, graceful (the guest powers off on the ACPI power button):',
            '  real CH: not measurable with the test guest (it ignores ACPI; a graceful stop always escalates)',
            '  simulator: %8.1f ms (ad hoc ch_vm state=stopped), over ping %+.1f ms'
            % (sim.med('graceful'), over_ping(sim, 'graceful')),
            'stop, the guest ignores ACPI (ch_vm state=stopped stop_timeout=%d; simulator with CHSIM_IGNORE_ACPI=1):'
            % STOP_TIMEOUT,
            '  ' + pair('ad hoc run', real, sim, 'escalate'),
            '    of which the stop_timeout wait %.1f / %.1f ms, the rest %.1f / %.1f ms (real / simulator;'
            ' the wait as timed in the engine below)'
            % (real.med('ladder_wait'), sim.med('ladder_wait'), real.med('escalate') - real.med('ladder_wait'),
               sim.med('escalate') - sim.med('ladder_wait')),
            '  ' + pair('engine only (VmEngine converge stopped)', real, sim, 'ladder', floor=False),
            '    ' + pair('up to the power button (record, vm.info)', real, sim, 'ladder_before', floor=False),
            '    ' + pair('power button -> stop_timeout over', real, sim, 'ladder_wait', floor=False),
            '    ' + pair('vm.shutdown + vmm.shutdown -> VMM gone', real, sim, 'ladder_after', floor=False),
        ]
        rc, present, rc_fork, fork, state = stock_snapshot(real, env)
        out.append('snapshot, restore, clone on %s (%s):' % (binary, version))
        if rc == 0:
            out.append('  ch_snapshot present SUCCEEDED here (rc 0): this host is not the one this bench was '
                       'written on; time it with CH_BINARY_SNAPSHOT=%s' % binary)
        else:
            out += ['  ch_snapshot present: FAILED, no number: %s' % ch_message(present),
                    '    (the VM afterwards: %s)' % state,
                    '  ch_snapshot restored: not measurable: there is no snapshot to restore',
                    '  ch_vm clone_from a snapshot: not measurable: there is no snapshot to clone',
                    '  ch_vm clone_from the running VM (fork): %s'
                    % ('FAILED, no number: %s' % ch_message(fork) if rc_fork else 'succeeded (rc 0)')]
        if snap_real is None:
            out.append('snapshot/restore/clone with the nested-state workaround: not measured '
                       '(no CH_BINARY_SNAPSHOT / --snapshot-binary given)')
        else:
            sides = (snap_real, snap_sim)
            for side in sides:
                timed(adhoc('cloudhv.ch.ch_vm', side.vm(side.key)), env, expect='CHANGED')
                cleanup.add(remove_vm, side, side.key, env)
            wait_marker(snap_real, snap_real.key)
            for index in range(rounds):
                for side in (sides if index % 2 == 0 else sides[::-1]):
                    snapshot_round(side, side.key, index, env)
                    engine_snapshot_round(side, side.key, index)
            out += ['snapshot, restore, clone: real CH = %s (%s), %s, against the simulator:'
                    % (snap_binary, WORKAROUND, subprocess.run([snap_binary, '--version'], capture_output=True,
                                                               text=True, check=False).stdout.split('\n')[0]),
                    '  ' + pair('ch_snapshot present (128M running VM)', snap_real, snap_sim, 'snapshot'),
                    '  ' + pair('ch_snapshot restored', snap_real, snap_sim, 'restore'),
                    '  ' + pair('ch_vm clone_from {vm, snapshot}', snap_real, snap_sim, 'clone'),
                    '  ' + pair('ansible.builtin.ping (same rounds)', snap_real, snap_sim, 'ping'),
                    '  engine only (SnapshotManager / VmEngine in this process, same rounds):',
                    '    ' + pair('snapshot present', snap_real, snap_sim, 'engine_snapshot', floor=False),
                    '    ' + pair('snapshot restored', snap_real, snap_sim, 'engine_restore', floor=False),
                    '    ' + pair('clone_from {vm, snapshot}', snap_real, snap_sim, 'engine_clone', floor=False)]
    finally:
        cleanup.run()
    out += ['bench time: %.0f s' % (time.monotonic() - started), load_line()]
    print('\n'.join(out))


if __name__ == '__main__':
    main()
