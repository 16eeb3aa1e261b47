"""Many VMs on one host: converge N VMs (N = 1, 10, 50, 100) in one play, then run the same play
again (no change); time and CPU per VM for both, against N, with a `loop:` over cloudhv.ch.ch_vm
(what the cloudhv.ch.vms role ran before issue 15; the role now runs one cloudhv.ch.ch_vms task,
which bench/fleet.py measures against this loop: the chart shows its CPU per VM from
bench/fleet.json next to the loop's when that file exists).

Per VM = (play time - the same play with no VMs) / N, and the median time of one loop item (from
the timestamps of bench/callback_plugins/bench_timing.py). "Growth" is the Theil-Sen slope of
the loop item time against the item's index in the N=100 run (first item left out: it also builds
the module's AnsiballZ payload, once per play), i.e. what each VM already on the
host adds to the next one: flat means ~0 ms/VM.

Target (issue 7): per-VM cost flat in N. Writes the numbers to bench/scale.json and the chart to
bench/scale.png with matplotlib (bench/requirements.txt), from a bench-only venv build/bench-venv
that it creates when the running Python has no matplotlib (`scale.py --chart bench/scale.json`
redraws the chart from saved numbers).
Between sizes the VMs are removed by ending their VMMs and deleting the state and run directories;
with --with-remove they are removed by the play (state=absent, purge=true) and that is timed too.
The simulator runs without request validation (CHSIM_SPEC pointing nowhere; --validate keeps it):
a fresh simulator spends 0.3-0.5 s of CPU importing its OpenAPI validator, which real CH does not.
Run: .venv/bin/python bench/scale.py [--with-remove] [--validate] [N ...]   (default 1 10 50 100; 5-10 minutes here, by load)
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

from common import REPO, machine, median_ms
from harness import (CALLBACKS, CH_VM_LOOP_TASKS, Cleanup, adhoc, ansible_env, bench_host, kill_pids_under,
                     load_line, need_root, no_validation_spec, playbook, read_timing, target_python, timed_cpu)

SIZES = (1, 10, 50, 100)
HERE = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.join(HERE, 'scale.png')
NUMBERS = os.path.join(HERE, 'scale.json')
BENCH_VENV = os.path.join(REPO, 'build', 'bench-venv')

ROLE_PLAY = """- hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: cloudhv.ch.vms
"""

LOOP_PLAY = """- hosts: localhost
  connection: local
  gather_facts: false
""" + CH_VM_LOOP_TASKS


FLEET_NUMBERS = os.path.join(HERE, 'fleet.json')


def use_role():
    """The role converges its VMs with one ch_vms task since issue 15: no loop items to time.
    This benchmark keeps the ch_vm loop; bench/fleet.py measures ch_vms."""
    return False


def slope(xs, ys):
    """Theil-Sen: the median of the pairwise slopes, robust to the outliers a shared machine makes."""
    pairs = [(ys[j] - ys[i]) / float(xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs))
             if xs[j] != xs[i]]
    return statistics.median(pairs) if pairs else 0.0


class Bench(object):
    def __init__(self, work, binary, kernel, env):
        self.work, self.binary, self.kernel, self.env = work, binary, kernel, env
        self.play = os.path.join(work, 'play.yml')
        with open(self.play, 'w') as handle:
            handle.write(ROLE_PLAY if use_role() else LOOP_PLAY)
        self.state_dir, self.run_dir = os.path.join(work, 's'), os.path.join(work, 'r')
        self.last_loads = []

    def vars_file(self, names, **extra):
        path = os.path.join(self.work, 'vars.json')
        vms = [dict(dict(name=name, kernel=self.kernel), **extra) for name in names]
        with open(path, 'w') as handle:
            json.dump({'cloudhv_binary': self.binary, 'cloudhv_state_dir': self.state_dir,
                       'cloudhv_run_dir': self.run_dir, 'cloudhv_vms': vms}, handle)
        return path

    def run(self, names, **extra):
        """One play; returns (seconds, item durations in order, changed count, CPU seconds of Ansible and
        its modules: the detached VMMs are not counted)."""
        log = os.path.join(self.work, 'timing.jsonl')
        if os.path.exists(log):
            os.unlink(log)
        env = dict(self.env, BENCH_TIMING_LOG=log)
        elapsed, cpu, _out = timed_cpu(playbook(self.play, extra=['-e', '@' + self.vars_file(names, **extra)]), env)
        events = read_timing(log)
        items, changed, start = [], 0, None
        self.last_loads = []
        for event in events:
            if event['event'] == 'task_start':
                start = event['t'] if 'Converge the VMs' in event['task'] else None
            elif event['event'] == 'item' and start is not None and 'Converge the VMs' in event['task']:
                if event['status'] != 'ok':
                    raise RuntimeError('item %s failed' % event['item'])
                items.append(event['t'] - start)
                self.last_loads.append(event.get('load'))
                start = event['t']
                changed += int(event['changed'])
        if len(items) != len(names):
            raise RuntimeError('expected %d loop items, saw %d' % (len(names), len(items)))
        return elapsed, items, changed, cpu

    def probe(self, name, rounds=5):
        """A no-change ad hoc ch_vm run on one VM, with whatever else is on the host: (wall, CPU) medians."""
        args = {'name': name, 'kernel': self.kernel, 'binary': self.binary, 'state_dir': self.state_dir,
                'run_dir': self.run_dir}
        samples = [timed_cpu(adhoc('cloudhv.ch.ch_vm', args), self.env, 'SUCCESS')[:2] for _round in range(rounds)]
        return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)

    def teardown(self):
        """Without --with-remove: end this run's VMMs (by pid) and delete the state and run dirs."""
        kill_pids_under(self.binary)
        deadline = time.monotonic() + 10
        while vmm_footprint(self.work)[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        for path in (self.state_dir, self.run_dir):
            shutil.rmtree(path, ignore_errors=True)


def vmm_footprint(work):
    """Resident memory and CPU seconds of the simulator processes under `work`."""
    rss, cpu, count = 0, 0.0, 0
    tick = os.sysconf('SC_CLK_TCK')
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as handle:
                if os.path.join(work, 'cloud-hypervisor').encode() not in handle.read():
                    continue
            with open('/proc/%s/stat' % entry) as handle:
                fields = handle.read().rsplit(')', 1)[1].split()
            with open('/proc/%s/statm' % entry) as handle:
                rss += int(handle.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
            cpu += (int(fields[11]) + int(fields[12])) / float(tick)
            count += 1
        except (OSError, IndexError):
            continue
    return count, rss, cpu


def main():
    if sys.argv[1:2] == ['--chart']:
        with open(sys.argv[2]) as handle:
            saved = json.load(handle)
        chart(dict((int(k), v) for k, v in saved['results'].items()), saved['base'], saved['base_cpu'], saved['role'],
              saved['date'])
        return
    with_remove = '--with-remove' in sys.argv
    validate = '--validate' in sys.argv
    sizes = [int(a) for a in sys.argv[1:] if not a.startswith('--')] or list(SIZES)
    need_root()
    cleanup = Cleanup()
    results = {}
    try:
        work, binary, kernel = bench_host('chb-scale-', cleanup)
        env = ansible_env(target_python(), ANSIBLE_CALLBACK_PLUGINS=CALLBACKS, ANSIBLE_CALLBACKS_ENABLED='bench_timing')
        if not validate:
            env['CHSIM_SPEC'] = no_validation_spec(work)
        bench = Bench(work, binary, kernel, env)
        all_names = ['s%03d' % i for i in range(max(sizes))]
        # clean-up on every way out: kill_pids_under(work) ends the VMMs, rmtree removes their state
        bench.run(['warm'])                                   # warm caches once, not counted
        bench.run(['warm'], state='absent', purge=True)
        empty, empty_cpu = [], []

        def run_empty():
            elapsed, _items, _changed, cpu = bench.run([])
            empty.append(elapsed)
            empty_cpu.append(cpu)

        for _round in range(3):
            run_empty()
        for n in sizes:
            names = all_names[:n]
            reps = 3 if n == 1 else 1
            conv, again, gone, conv_items, again_items, gone_items, rest = [], [], [], [], [], [], []
            cpu = {'conv': [], 'again': [], 'gone': []}
            loads = {}
            footprint, probes = None, None
            for rep in range(reps):
                run_empty()
                t, items, changed, used = bench.run(names)
                cpu['conv'].append(used)
                loads['conv'] = bench.last_loads
                if changed != n:
                    raise RuntimeError('N=%d: %d of %d VMs changed on the first run' % (n, changed, n))
                conv.append(t)
                conv_items.append(items)
                rest.append(t - sum(items))
                footprint = vmm_footprint(work)
                time.sleep(3.0)
                footprint = footprint + (vmm_footprint(work)[2] - footprint[2],)
                t, items, changed, used = bench.run(names)
                cpu['again'].append(used)
                loads['again'] = bench.last_loads
                if changed:
                    raise RuntimeError('N=%d: %d VMs changed on the no-change run' % (n, changed))
                again.append(t)
                again_items.append(items)
                if rep == 0:
                    probes = (bench.probe(names[0]), bench.probe(names[-1]))
                if with_remove:
                    t, items, changed, used = bench.run(names, state='absent', purge=True)
                    cpu['gone'].append(used)
                    loads['gone'] = bench.last_loads
                    gone.append(t)
                    gone_items.append(items)
                else:
                    bench.teardown()
            results[n] = dict(reps=reps, conv=conv, again=again, gone=gone, conv_items=conv_items,
                              again_items=again_items, gone_items=gone_items, footprint=footprint, rest=rest,
                              conv_cpu=cpu['conv'], again_cpu=cpu['again'], gone_cpu=cpu['gone'], loads=loads,
                              probes=probes)
            print('N=%d done (%d rep%s)' % (n, reps, 's' if reps > 1 else ''), file=sys.stderr, flush=True)
    finally:
        cleanup.run()
    base, base_cpu = statistics.median(empty), statistics.median(empty_cpu)
    report(results, base, base_cpu, len(empty), validate)
    with open(NUMBERS, 'w') as handle:
        json.dump({'machine': machine(), 'role': use_role(), 'date': time.strftime('%Y-%m-%d'), 'base': base,
                   'base_cpu': base_cpu, 'base_runs': len(empty), 'results': results}, handle, indent=1,
                  sort_keys=True)
    print('numbers: %s' % NUMBERS)
    draw(NUMBERS)


def draw(numbers):
    """Draw the chart with matplotlib from this Python, or from the bench-only venv."""
    try:
        import matplotlib  # noqa: F401  pylint: disable=unused-import
        python = sys.executable
    except ImportError:
        python = os.path.join(BENCH_VENV, 'bin', 'python')
        if not os.path.exists(python) or subprocess.run([python, '-c', 'import matplotlib'], capture_output=True, check=False).returncode:
            subprocess.run([sys.executable, '-m', 'venv', BENCH_VENV], check=True)
            subprocess.run([python, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', '-r',
                            os.path.join(HERE, 'requirements.txt')], check=True)
    subprocess.run([python, os.path.abspath(__file__), '--chart', numbers], check=True)


def per_vm(samples, base, n):
    return (statistics.median(samples) - base) / n * 1000.0


def flat(values):
    return [v for rep in values for v in rep]


def report(results, base, base_cpu, base_runs, validate):
    print('machine: %s' % machine())
    print(load_line())
    print('play: %s; CH simulator (request validation %s); module interpreter: %s' % (
        'role cloudhv.ch.vms (cloudhv_vms = list of ch_vm option dicts)' if use_role()
        else 'loop over cloudhv.ch.ch_vm (roles/vms does not exist yet)', 'on' if validate else 'off', target_python()))
    print('the same play with no VMs (fixed cost): median %.0f ms of %d runs' % (base * 1000.0, base_runs))
    removed = all(r['gone'] for r in results.values())
    print('%5s %4s | %-38s | %-29s | %-20s| %s' % (
        'N', 'reps', 'converge: play  per-VM   item  rest', 'no-change: play per-VM item',
        'remove: per-VM item ' if removed else 'remove: not timed', 'VMMs x RSS'))
    for n, r in sorted(results.items()):
        count, rss, _cpu, idle_cpu = r['footprint']
        print('%5d %4d | %7.1f s %6.0f ms %6.0f ms %5.1f s | %7.1f s %6.0f ms %6.0f ms | %-20s| %d x %.0f MiB'
              % (n, r['reps'], statistics.median(r['conv']), per_vm(r['conv'], base, n),
                 median_ms(flat(r['conv_items'])), statistics.median(r['rest']),
                 statistics.median(r['again']), per_vm(r['again'], base, n), median_ms(flat(r['again_items'])),
                 '%6.0f ms %6.0f ms ' % (per_vm(r['gone'], base, n), median_ms(flat(r['gone_items'])))
                 if removed else '', count, rss / 1048576.0 / max(count, 1)))
    print('(per-VM = (play - empty play) / N; item = median time of one loop item; rest = play minus the loop)')
    print('CPU time of Ansible and its modules (not the VMMs), per VM = (play - empty play) / N; empty play %.0f ms:'
          % (base_cpu * 1000.0))
    for n, r in sorted(results.items()):
        print('%5d | converge %6.0f ms/VM | no-change %6.0f ms/VM%s' % (
            n, per_vm(r['conv_cpu'], base_cpu, n), per_vm(r['again_cpu'], base_cpu, n),
            ' | remove %6.0f ms/VM' % per_vm(r['gone_cpu'], base_cpu, n) if r['gone_cpu'] else ''))
    for n, r in sorted(results.items()):
        print('N=%d: first converge item %.0f ms (builds the AnsiballZ payload once per play), the others median %s; '
              'idle VMMs used %.2f CPU-s in 3 s after the converge'
              % (n, r['conv_items'][0][0] * 1000.0, '%.0f ms' % median_ms(r['conv_items'][0][1:]) if n > 1 else '-',
                 r['footprint'][3]))
    print('ad hoc no-change ch_vm run on one VM with N VMs on the host (5 runs each, medians): wall / CPU of '
          'Ansible + module')
    for n, r in sorted(results.items()):
        (w0, c0), (w1, c1) = r['probes']
        print('%5d | first VM %5.0f ms / %4.0f ms CPU | last VM %5.0f ms / %4.0f ms CPU'
              % (n, w0 * 1000, c0 * 1000, w1 * 1000, c1 * 1000))
    big = max(results)
    if big >= 10:
        r = results[big]
        for label, key in (('converge', 'conv_items'), ('no-change', 'again_items'), ('remove', 'gone_items')):
            if not r[key]:
                continue
            items = r[key][0][1:]
            xs = list(range(2, len(items) + 2))
            tenth = max(1, len(items) // 10)
            print('N=%d %-9s item time vs VMs already there: slope %+.2f ms/VM; first %d items median %.0f ms, '
                  'last %d median %.0f ms' % (big, label, slope(xs, items) * 1000.0, tenth, median_ms(items[:tenth]),
                                              tenth, median_ms(items[-tenth:])))
    small, large = min(results), max(results)
    if small != large:
        small = min(n for n in results if n >= 10) if large >= 10 else small
        for label, key in (('converge', 'conv'), ('no-change', 'again')):
            a, b = per_vm(results[small][key], base, small), per_vm(results[large][key], base, large)
            ia = median_ms(flat(results[small][key + '_items']))
            ib = median_ms(flat(results[large][key + '_items']))
            ca, cb = per_vm(results[small][key + '_cpu'], base_cpu, small), per_vm(results[large][key + '_cpu'], base_cpu,
                                                                                   large)
            print('%-9s per VM N=%d -> N=%d: wall %.0f -> %.0f ms (x%.2f); loop item %.0f -> %.0f ms (x%.2f); '
                  'CPU %.0f -> %.0f ms (x%.2f)' % (label, small, large, a, b, b / a, ia, ib, ib / ia, ca, cb, cb / ca))


def chart(results, base, base_cpu, role, date):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    ns = sorted(results)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (key, label, marker), color in zip((('conv', 'converge (create + boot)', 'o'), ('again', 'no-change re-run', 's'),
                                            ('gone', 'remove (absent, purge)', '^')), ('C0', 'C1', 'C2')):
        if all(results[n][key] for n in ns):
            left.plot(ns, [per_vm(results[n][key], base, n) for n in ns], marker=marker, color=color,
                      label=label + ', wall')
            left.plot(ns, [per_vm(results[n][key + '_cpu'], base_cpu, n) for n in ns], marker=marker, color=color,
                      linestyle='--', label=label + ', CPU')
    if os.path.exists(FLEET_NUMBERS):
        # bench/fleet.py: one ch_vms task over the same N (CPU per VM), measured side by side with its own loop
        with open(FLEET_NUMBERS) as handle:
            fleet = json.load(handle)
        fns = sorted(int(n) for n in fleet['scaling'])
        fbase = statistics.median(e[1] for e in fleet['empty']['loop'])    # the play with no VMs runs no module
        for key, label, marker, color in (('conv', 'converge', 'o', 'C3'), ('again', 'no-change', 's', 'C4')):
            left.plot(fns, [(fleet['scaling'][str(n)]['fleet'][key][1] - fbase) / n * 1000.0 for n in fns],
                      marker=marker, color=color, linestyle=':', label='ch_vms %s, CPU (fleet.py %s)' % (label, fleet['date']))
            left.plot(fns, [(fleet['scaling'][str(n)]['loop'][key][1] - fbase) / n * 1000.0 for n in fns],
                      marker=marker, color='C7', linestyle=':', markersize=4,
                      label='ch_vm loop %s, CPU (same fleet.py run)' % label)
    left.set_xscale('log')
    left.set_xticks(ns)
    left.set_xticklabels([str(n) for n in ns])
    left.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    left.set_xlabel('VMs in the play (N)')
    left.set_ylabel('ms per VM  ((play - empty play) / N)')
    left.legend(fontsize='small')
    left.set_ylim(bottom=0)
    left.grid(True, alpha=0.3)
    left.set_title('per-VM cost against N')
    big = max(ns)
    load_axis = right.twinx()
    for (key, label), color in zip((('conv', 'converge'), ('again', 'no-change'), ('gone', 'remove')), ('C0', 'C1', 'C2')):
        if not results[big][key + '_items']:
            continue
        items = [i * 1000.0 for i in results[big][key + '_items'][0]]
        xs = list(range(1, len(items) + 1))
        right.plot(xs, items, '.', markersize=4, color=color, label=label)
        window = 9
        smooth = [statistics.median(items[max(0, i - window // 2):i + window // 2 + 1]) for i in range(len(items))]
        right.plot(xs, smooth, '-', color=color, linewidth=1, label=label + ' (running median of %d)' % window)
        load = results[big].get('loads', {}).get(key) or []
        if load and None not in load:
            load_axis.plot(xs, load, ':', color=color, linewidth=1, alpha=0.7)
    load_axis.set_ylabel('1-min load average of the machine (dotted)')
    load_axis.set_ylim(bottom=0)
    right.set_xlabel('loop item (VMs already on the host + 1), N=%d' % big)
    right.set_ylabel('ms per loop item')
    right.set_ylim(bottom=0)
    right.grid(True, alpha=0.3)
    right.legend(fontsize='small', loc='upper left')
    right.set_title('each VM against the VMs before it')
    fig.suptitle('cloudhv.ch: N VMs in one play on one host (%s, CH simulator, %s)' % (
        'ch_vm loop of the vms role before issue 15' if role else 'loop over ch_vm', date))
    fig.tight_layout()
    fig.savefig(CHART, dpi=110)
    print('chart: %s' % CHART)


if __name__ == '__main__':
    sys.path.insert(0, REPO)
    main()
