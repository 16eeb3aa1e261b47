"""ch_vms (issue 15): a host's VMs in one task against the ch_vm loop the vms role used to run.

Three comparisons, each side by side in this one process, alternating, on the CH simulator:

1. no-change: one ch_vms task over 50 VMs vs one no-change ad hoc ch_vm task on one VM of the same
   host (target: ratio <= 2.0, wall and CPU); the per-VM marginal CPU cost of ch_vms
   ((50 VMs - 1 VM) / 49); CH API requests per VM of the no-change ch_vms run (target: 1).
2. create: create and boot 20 VMs, ch_vms with parallel 4 vs the ch_vm loop (CHSIM_DELAY=0.2: every
   PUT takes 200 ms, as a real CH's create and boot do; target: the loop takes >= 3 times longer).
3. scaling: CPU per VM ((play - empty play) / N) at N = 1, 10, 50, 100 for converge and no-change,
   ch_vms vs the loop; written to bench/fleet.json, which bench/scale.py draws next to its loop curves.

CPU is user + system of the Ansible process tree (not the VMMs). The simulator runs without request
validation (CHSIM_SPEC pointing nowhere), as in scale.py.
Run: .venv/bin/python bench/fleet.py [rounds] [--no-scaling]   (5-10 minutes here, by load)
"""
import json
import os
import shutil
import statistics
import sys
import time

from common import machine
from harness import (CH_VM_LOOP_TASKS, Cleanup, adhoc, ansible_env, bench_host, kill_pids_under, load_line,
                     need_root, no_validation_spec, playbook, read_requests, target_python, timed_cpu)

HERE = os.path.dirname(os.path.abspath(__file__))
NUMBERS = os.path.join(HERE, 'fleet.json')
HEADER = """- hosts: localhost
  connection: local
  gather_facts: false
"""
FLEET_PLAY = HEADER + """  tasks:
    - name: Converge the VMs
      cloudhv.ch.ch_vms:
        vms: "{{ cloudhv_vms }}"
        parallel: "{{ cloudhv_parallel | default(4) }}"
        binary: "{{ cloudhv_binary }}"
        state_dir: "{{ cloudhv_state_dir }}"
        run_dir: "{{ cloudhv_run_dir }}"
"""
LOOP_PLAY = HEADER + CH_VM_LOOP_TASKS
SIZES = (1, 10, 50, 100)


class Host(object):
    def __init__(self, work, binary, kernel, env):
        self.work, self.binary, self.kernel, self.env = work, binary, kernel, env
        self.plays = {}
        for kind, text in (('fleet', FLEET_PLAY), ('loop', LOOP_PLAY)):
            self.plays[kind] = os.path.join(work, '%s.yml' % kind)
            with open(self.plays[kind], 'w') as handle:
                handle.write(text)
        self.state_dir, self.run_dir = os.path.join(work, 's'), os.path.join(work, 'r')
        self.requests = os.path.join(work, 'requests.jsonl')

    def play(self, kind, names, env=None, **extra):
        path = os.path.join(self.work, 'vars.json')
        vms = [dict(name=n, kernel=self.kernel) for n in names]
        with open(path, 'w') as handle:
            json.dump({'cloudhv_binary': self.binary, 'cloudhv_state_dir': self.state_dir, 'cloudhv_run_dir': self.run_dir,
                       'cloudhv_vms': vms, 'cloudhv_parallel': extra.get('parallel', 4)}, handle)
        elapsed, cpu, out = timed_cpu(playbook(self.plays[kind], extra=['-e', '@' + path]), dict(self.env, **(env or {})))
        changed = int(out.rsplit('changed=', 1)[1].split()[0])
        return elapsed, cpu, changed

    def probe(self, name):
        args = {'name': name, 'kernel': self.kernel, 'binary': self.binary, 'state_dir': self.state_dir,
                'run_dir': self.run_dir}
        return timed_cpu(adhoc('cloudhv.ch.ch_vm', args), self.env, 'SUCCESS')[:2]

    def probe_fleet(self, names):
        """A no-change ad hoc ch_vms run over ``names``: (wall, CPU)."""
        args = {'vms': [{'name': n, 'kernel': self.kernel} for n in names], 'binary': self.binary,
                'state_dir': self.state_dir, 'run_dir': self.run_dir}
        return timed_cpu(adhoc('cloudhv.ch.ch_vms', args), self.env, 'SUCCESS')[:2]

    def wipe(self):
        kill_pids_under(self.binary)
        time.sleep(0.3)
        for path in (self.state_dir, self.run_dir):
            shutil.rmtree(path, ignore_errors=True)


def med(values):
    return statistics.median(values)


def main():
    rounds = int(next((a for a in sys.argv[1:] if a.isdigit()), 5))
    need_root()
    cleanup = Cleanup()
    out = {'machine': machine(), 'date': time.strftime('%Y-%m-%d'), 'rounds': rounds}
    try:
        work, binary, kernel = bench_host('chb-fleet-', cleanup)
        env = ansible_env(target_python())
        env['CHSIM_SPEC'] = no_validation_spec(work)
        host = Host(work, binary, kernel, env)
        host.play('fleet', ['warm'])
        host.play('loop', ['warm'])
        host.wipe()

        # 1. no-change: 50 VMs in one ch_vms task vs one ch_vm task, both ad hoc; the VMMs log their requests
        names = ['n%02d' % i for i in range(50)]
        logged = {'CHSIM_REQUEST_LOG': host.requests}
        host.play('fleet', names, env=logged, parallel=4)
        fleet50, fleet1, single = [], [], []
        for _round in range(rounds):
            fleet50.append(host.probe_fleet(names))
            fleet1.append(host.probe_fleet(names[:1]))
            single.append(host.probe(names[0]))
        start = len(read_requests(host.requests))
        _t, _c, changed = host.play('fleet', names)
        assert changed == 0, 'the no-change run changed something'
        requests = read_requests(host.requests)[start:]
        out['noop'] = {'fleet50': fleet50, 'fleet1': fleet1, 'adhoc_ch_vm': single,
                       'requests': len(requests), 'requests_per_vm': len(requests) / 50.0,
                       'endpoints': sorted(set('%s %s' % (r['method'], r['endpoint']) for r in requests))}
        host.wipe()

        # 2. create and boot 20 VMs with every PUT taking 200 ms
        names = ['c%02d' % i for i in range(20)]
        slow = {'CHSIM_DELAY': '0.2'}
        create = {'fleet': [], 'loop': []}
        for _round in range(max(2, rounds // 2)):
            for kind in ('loop', 'fleet'):
                t, c, changed = host.play(kind, names, env=slow, parallel=4)
                assert changed >= 1, changed
                create[kind].append((t, c))
                host.wipe()
        out['create'] = create

        # 3. scaling
        if '--no-scaling' not in sys.argv:
            empty = {'fleet': [], 'loop': []}
            scaling = {}
            for kind in ('fleet', 'loop'):
                for _round in range(3):
                    empty[kind].append(host.play(kind, [])[:2])
            for n in SIZES:
                names = ['s%03d' % i for i in range(n)]
                scaling[n] = {}
                for kind in ('loop', 'fleet'):
                    conv = host.play(kind, names)[:2]
                    again = host.play(kind, names)[:2]
                    scaling[n][kind] = {'conv': conv, 'again': again}
                    host.wipe()
                print('N=%d done' % n, file=sys.stderr, flush=True)
            out['empty'] = empty
            out['scaling'] = scaling
    finally:
        cleanup.run()
    report(out)
    if 'scaling' in out:
        with open(NUMBERS, 'w') as handle:
            json.dump(out, handle, indent=1, sort_keys=True)
        print('numbers: %s (bench/scale.py --chart bench/scale.json draws them next to the loop)' % NUMBERS)


def report(out):
    print('machine: %s' % out['machine'])
    print(load_line())
    noop = out['noop']
    f50w, f50c = med([s[0] for s in noop['fleet50']]), med([s[1] for s in noop['fleet50']])
    f1w, f1c = med([s[0] for s in noop['fleet1']]), med([s[1] for s in noop['fleet1']])
    sw, sc = med([s[0] for s in noop['adhoc_ch_vm']]), med([s[1] for s in noop['adhoc_ch_vm']])
    print('1. no-change, ad hoc (%d rounds, medians): ch_vms over 50 VMs %.0f ms wall / %.0f ms CPU; ch_vm on one VM '
          '%.0f ms / %.0f ms CPU' % (out['rounds'], f50w * 1000, f50c * 1000, sw * 1000, sc * 1000))
    print('   ratio ch_vms(50) / ch_vm(1): wall %.2f, CPU %.2f (target <= 2.0)' % (f50w / sw, f50c / sc))
    print('   ch_vms over 1 VM: %.0f ms wall / %.0f ms CPU; marginal cost per VM (50 - 1) / 49: %.1f ms wall, '
          '%.1f ms CPU' % (f1w * 1000, f1c * 1000, (f50w - f1w) / 49 * 1000, (f50c - f1c) / 49 * 1000))
    print('   CH API requests in the no-change run over 50 VMs: %d (%.2f per VM; %s) (target: 1 per VM)'
          % (noop['requests'], noop['requests_per_vm'], ', '.join(noop['endpoints'])))
    create = out['create']
    lw, lc = med([s[0] for s in create['loop']]), med([s[1] for s in create['loop']])
    fw, fc = med([s[0] for s in create['fleet']]), med([s[1] for s in create['fleet']])
    print('2. create + boot 20 VMs, CHSIM_DELAY=0.2 (%d rounds, medians): ch_vm loop %.1f s (%.1f s CPU); ch_vms '
          'parallel 4 %.1f s (%.1f s CPU); loop / ch_vms %.2f (target >= 3)'
          % (len(create['loop']), lw, lc, fw, fc, lw / fw))
    if 'scaling' in out:
        print('3. CPU per VM = (play - the same play with no VMs and no module run) / N, ms; that empty play: %.0f ms CPU'
              % (med([e[1] for e in out['empty']['loop']]) * 1000))
        print('%5s | %-23s | %-23s' % ('N', 'converge: loop  ch_vms', 'no-change: loop  ch_vms'))
        table = per_vm_table(out)
        for n, row in sorted(table.items()):
            print('%5d | %8.0f %8.0f      | %8.0f %8.0f'
                  % (n, row['loop']['conv'], row['fleet']['conv'], row['loop']['again'], row['fleet']['again']))
        sizes = sorted(table)
        if len(sizes) > 1:
            lo, hi = sizes[0], sizes[-1]
            cpu = dict((n, (out['scaling'].get(n) or out['scaling'][str(n)])['fleet']['again'][1]) for n in (lo, hi))
            print('   ch_vms no-change marginal CPU per VM, (N=%d - N=%d) / %d: %.1f ms'
                  % (hi, lo, hi - lo, (cpu[hi] - cpu[lo]) / (hi - lo) * 1000.0))


def per_vm_table(out):
    """{N: {kind: {'conv', 'again'}}} of CPU ms per VM."""
    table = {}
    base = med([e[1] for e in out['empty']['loop']])    # the loop over no VM runs no module at all
    for n, row in out['scaling'].items():
        n = int(n)
        table[n] = {}
        for kind in ('loop', 'fleet'):
            table[n][kind] = dict((key, (row[kind][key][1] - base) / n * 1000.0) for key in ('conv', 'again'))
    return table


if __name__ == '__main__':
    main()
