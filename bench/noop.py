"""A no-change `ch_vm` run on an already-running VM against `ansible.builtin.ping`, ad hoc and in a
playbook, run alternately in one process; prints medians, ratios, and the number of CH API
requests a no-change run makes (from the simulator's request log).

Also (no target; data for planning): the same playbook against 8 inventory hosts (local
connection, one VM each, forks 8), where ansible-core builds each module's payload once per run
rather than once per host, in wall and CPU time, with the per-host difference.

Targets: ad hoc ratio <= 1.15 (issue 3), <= 1.10 (issue 7); API requests per no-change run <= 2.
Run: .venv/bin/python bench/noop.py [rounds]
"""
import json
import os
import subprocess
import sys

from common import REPO, machine, median_ms
from harness import Cleanup, ansible_env, bench_host, target_python, timed, timed_cpu

HOSTS = 8

BIN = os.path.dirname(sys.executable)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    cleanup = Cleanup()
    work, binary, kernel = bench_host('chv-bench-', cleanup)
    req_log = os.path.join(work, 'requests.jsonl')
    env = ansible_env(target_python(), CHSIM_REQUEST_LOG=req_log)
    state, run = os.path.join(work, 's'), os.path.join(work, 'r')
    args = 'name=bench1 kernel=%s binary=%s state_dir=%s run_dir=%s' % (kernel, binary, state, run)
    base = [os.path.join(BIN, 'ansible'), 'localhost', '-i', 'localhost,', '-c', 'local']
    vm_cmd = base + ['-m', 'cloudhv.ch.ch_vm', '-a', args]
    ping_cmd = base + ['-m', 'ansible.builtin.ping']
    playbook = os.path.join(work, 'noop.yml')
    with open(playbook, 'w') as handle:
        handle.write('- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n'
                     '    - cloudhv.ch.ch_vm: {name: bench1, kernel: %s, binary: %s, state_dir: %s, run_dir: %s}\n'
                     % (kernel, binary, state, run))
    ping_book = os.path.join(work, 'ping.yml')
    with open(ping_book, 'w') as handle:
        handle.write('- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n'
                     '    - ansible.builtin.ping:\n')
    pb = [os.path.join(BIN, 'ansible-playbook'), '-i', 'localhost,']
    inventory = os.path.join(work, 'hosts.ini')
    with open(inventory, 'w') as handle:
        handle.write('[hv]\n' + ''.join('h%d ansible_connection=local\n' % i for i in range(HOSTS)))
    many = os.path.join(work, 'many.yml')
    with open(many, 'w') as handle:
        handle.write('- hosts: hv\n  gather_facts: false\n  tasks:\n'
                     '    - cloudhv.ch.ch_vm: {name: "bench-{{ inventory_hostname }}", kernel: %s, binary: %s, '
                     'state_dir: %s, run_dir: %s}\n' % (kernel, binary, state, run))
    many_ping = os.path.join(work, 'many-ping.yml')
    with open(many_ping, 'w') as handle:
        handle.write('- hosts: hv\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n')
    pb_many = [os.path.join(BIN, 'ansible-playbook'), '-i', inventory, '--forks', str(HOSTS)]
    try:
        _t, out = timed(vm_cmd, env)                   # boots the VM
        assert 'CHANGED' in out, out
        if os.path.exists(req_log):
            os.unlink(req_log)
        _t, out = timed(vm_cmd, env)
        assert '"changed": false' in out, out
        with open(req_log) as handle:
            requests = [json.loads(line) for line in handle if line.strip()]
        timed(pb_many + [many], env)                      # boots the 8 VMs
        samples = {'vm': [], 'ping': [], 'vm_pb': [], 'ping_pb': []}
        cpu = {'vm_many': [], 'ping_many': []}
        for _round in range(rounds):
            samples['vm'].append(timed(vm_cmd, env)[0])
            samples['ping'].append(timed(ping_cmd, env)[0])
            samples['vm_pb'].append(timed(pb + [playbook], env)[0])
            samples['ping_pb'].append(timed(pb + [ping_book], env)[0])
            for key, book in (('vm_many', many), ('ping_many', many_ping)):
                elapsed, cpu_s, out = timed_cpu(pb_many + [book], env)
                assert 'changed=0' in out and 'failed=0' in out, out
                samples.setdefault(key, []).append(elapsed)
                cpu[key].append(cpu_s)
        subprocess.run(base + ['-m', 'cloudhv.ch.ch_vm', '-a', args + ' state=absent purge=true'],
                       env=env, capture_output=True, check=False)
        for i in range(HOSTS):
            subprocess.run(base + ['-m', 'cloudhv.ch.ch_vm', '-a', 'name=bench-h%d binary=%s state_dir=%s run_dir=%s '
                                   'state=absent purge=true' % (i, binary, state, run)],
                           env=env, capture_output=True, check=False)
    finally:
        cleanup.run()
    med = dict((k, median_ms(v)) for k, v in samples.items())
    print('machine: %s' % machine())
    print('CH: simulator; %d rounds, alternating; module interpreter: %s (requirements.txt only)'
          % (rounds, target_python()))
    print('ad hoc   ch_vm no-change: %7.1f ms   ping: %7.1f ms   ratio %.3f (target <= 1.15; issue 7: <= 1.10)'
          % (med['vm'], med['ping'], med['vm'] / med['ping']))
    print('playbook ch_vm no-change: %7.1f ms   ping: %7.1f ms   ratio %.3f (target <= 1.10)'
          % (med['vm_pb'], med['ping_pb'], med['vm_pb'] / med['ping_pb']))
    cpu_med = dict((k, median_ms(v)) for k, v in cpu.items())
    print('playbook on %d hosts (forks %d), no target: ch_vm %7.1f ms, ping %7.1f ms wall, ratio %.3f; '
          'CPU %7.1f / %7.1f ms, ratio %.3f, +%.1f ms CPU per host'
          % (HOSTS, HOSTS, med['vm_many'], med['ping_many'], med['vm_many'] / med['ping_many'],
             cpu_med['vm_many'], cpu_med['ping_many'], cpu_med['vm_many'] / cpu_med['ping_many'],
             (cpu_med['vm_many'] - cpu_med['ping_many']) / HOSTS))
    print('CH API requests in a no-change run: %d (%s) (target <= 2)'
          % (len(requests), ', '.join('%s %s' % (r['method'], r['endpoint']) for r in requests)))


if __name__ == '__main__':
    sys.path.insert(0, REPO)
    main()
