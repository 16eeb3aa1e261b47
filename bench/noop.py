"""A no-change `ch_vm` run on an already-running VM against `ansible.builtin.ping`, ad hoc and in a
playbook, run alternately in one process; prints medians, ratios, and the number of CH API
requests a no-change run makes (from the simulator's request log).

Ad hoc, three VMs (issue 16): a bare one (kernel only, no disk, no NIC); a realistic one with one
disk and one bridge NIC (its run checks that the bridge exists and reads the disk's header); and
the same with cloud-init (its run renders the seed files for their digest). Everything runs in a
throwaway network namespace holding the bridge, ping too. Wall and CPU time (of the Ansible
process tree, less distorted by a busy machine) for each.

Also (no target; data for planning): the same playbook against 8 inventory hosts (local
connection, one VM each, forks 8), where ansible-core builds each module's payload once per run
rather than once per host, in wall and CPU time, with the per-host difference.

Targets: ad hoc ratio <= 1.15 (issue 3), <= 1.10 (issue 7); the realistic VMs at the bare VM's
ratio (issue 16); API requests per no-change run <= 2.
Run: .venv/bin/python bench/noop.py [rounds] [--adhoc]   (--adhoc: the three VMs ad hoc only)
"""
import json
import os
import subprocess
import sys

from common import REPO, machine, median_ms
from harness import Cleanup, adhoc, ansible_env, bench_host, target_python, timed, timed_cpu

HOSTS = 8
# the ad hoc VMs: (label, extra ch_vm options); 'disk' and 'ci' get a disk and a NIC on the bridge
VMS = (('bare', {}), ('disk+nic', {'disk': True}), ('disk+nic+cloud-init', {'disk': True, 'ci': True}))

BIN = os.path.dirname(sys.executable)


def main():
    adhoc_only = '--adhoc' in sys.argv[1:]       # the three VMs ad hoc only (half the time)
    numbers = [a for a in sys.argv[1:] if a != '--adhoc']
    rounds = int(numbers[0]) if numbers else 15
    cleanup = Cleanup()
    work, binary, kernel = bench_host('chv-bench-', cleanup)
    netns = 'chv-bench-%d' % os.getpid()
    subprocess.run(['ip', 'netns', 'add', netns], check=True)
    cleanup.add(subprocess.run, ['ip', 'netns', 'delete', netns], check=False)
    for cmd in (['link', 'set', 'lo', 'up'], ['link', 'add', 'br0', 'type', 'bridge'], ['link', 'set', 'br0', 'up']):
        subprocess.run(['ip', '-n', netns] + cmd, check=True)
    inside = ['ip', 'netns', 'exec', netns]
    req_log = os.path.join(work, 'requests.jsonl')
    env = ansible_env(target_python(), CHSIM_REQUEST_LOG=req_log)
    state, run = os.path.join(work, 's'), os.path.join(work, 'r')
    common = {'kernel': kernel, 'binary': binary, 'state_dir': state, 'run_dir': run}
    base = inside + [os.path.join(BIN, 'ansible'), 'localhost', '-i', 'localhost,', '-c', 'local']
    vm_cmds = {}
    for label, extra in VMS:
        vm = dict(common, name='bench-%s' % label.replace('+', '-'))
        if extra.get('disk'):
            vm['disks'] = [{'path': os.path.join(work, '%s.raw' % vm['name']), 'size': '16M'}]
            vm['networks'] = [{'bridge': 'br0'}]
        if extra.get('ci'):
            vm['cloud_init'] = {'user_data': {'packages': ['nginx'], 'runcmd': ['echo hello']}}
        vm_cmds[label] = inside + adhoc('cloudhv.ch.ch_vm', vm)
    vm_cmd = vm_cmds['bare']
    ping_cmd = base + ['-m', 'ansible.builtin.ping']
    playbook = os.path.join(work, 'noop.yml')
    with open(playbook, 'w') as handle:
        handle.write('- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n'
                     '    - cloudhv.ch.ch_vm: {name: bench-bare, kernel: %s, binary: %s, state_dir: %s, run_dir: %s}\n'
                     % (kernel, binary, state, run))
    ping_book = os.path.join(work, 'ping.yml')
    with open(ping_book, 'w') as handle:
        handle.write('- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n'
                     '    - ansible.builtin.ping:\n')
    pb = inside + [os.path.join(BIN, 'ansible-playbook'), '-i', 'localhost,']
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
    pb_many = inside + [os.path.join(BIN, 'ansible-playbook'), '-i', inventory, '--forks', str(HOSTS)]
    try:
        for label, cmd in vm_cmds.items():
            _t, out = timed(cmd, env)                   # boots the VM
            assert 'CHANGED' in out, out
            _t, out = timed(cmd, env)
            assert '"changed": false' in out, (label, out)
        if os.path.exists(req_log):
            os.unlink(req_log)
        _t, out = timed(vm_cmd, env)
        assert '"changed": false' in out, out
        with open(req_log) as handle:
            requests = [json.loads(line) for line in handle if line.strip()]
        if not adhoc_only:
            timed(pb_many + [many], env)                  # boots the 8 VMs
        samples = {'ping': [], 'vm_pb': [], 'ping_pb': []}
        cpu = {'vm_many': [], 'ping_many': [], 'ping': []}
        for _round in range(rounds):
            for label, cmd in vm_cmds.items():
                elapsed, cpu_s, out = timed_cpu(cmd, env)
                assert '"changed": false' in out, (label, out)
                samples.setdefault(label, []).append(elapsed)
                cpu.setdefault(label, []).append(cpu_s)
            elapsed, cpu_s, _out = timed_cpu(ping_cmd, env)
            samples['ping'].append(elapsed)
            cpu['ping'].append(cpu_s)
            if adhoc_only:
                continue
            samples['vm_pb'].append(timed(pb + [playbook], env)[0])
            samples['ping_pb'].append(timed(pb + [ping_book], env)[0])
            for key, book in (('vm_many', many), ('ping_many', many_ping)):
                elapsed, cpu_s, out = timed_cpu(pb_many + [book], env)
                assert 'changed=0' in out and 'failed=0' in out, out
                samples.setdefault(key, []).append(elapsed)
                cpu[key].append(cpu_s)
        for label, _extra in VMS:
            subprocess.run(base + ['-m', 'cloudhv.ch.ch_vm', '-a', 'name=bench-%s binary=%s state_dir=%s run_dir=%s '
                                   'state=absent purge=true' % (label.replace('+', '-'), binary, state, run)],
                           env=env, capture_output=True, check=False)
        for i in range(HOSTS):
            subprocess.run(base + ['-m', 'cloudhv.ch.ch_vm', '-a', 'name=bench-h%d binary=%s state_dir=%s run_dir=%s '
                                   'state=absent purge=true' % (i, binary, state, run)],
                           env=env, capture_output=True, check=False)
    finally:
        cleanup.run()
    med = dict((k, median_ms(v)) for k, v in samples.items() if v)
    print('machine: %s' % machine())
    print('CH: simulator; %d rounds, alternating; module interpreter: %s (requirements.txt only)'
          % (rounds, target_python()))
    cpu_med = dict((k, median_ms(v)) for k, v in cpu.items() if v)
    for label, _extra in VMS:
        print('ad hoc   ch_vm no-change, %-21s %7.1f ms   ping: %7.1f ms   ratio %.3f   CPU %7.1f / %7.1f ms, ratio %.3f'
              % (label + ':', med[label], med['ping'], med[label] / med['ping'], cpu_med[label], cpu_med['ping'],
                 cpu_med[label] / cpu_med['ping']))
    print('         (targets: bare <= 1.15, issue 7: <= 1.10; issue 16: the realistic VMs at the bare VM\'s ratio)')
    if not adhoc_only:
        print_playbooks(med, cpu_med)
    print('CH API requests in a no-change run: %d (%s) (target <= 2)'
          % (len(requests), ', '.join('%s %s' % (r['method'], r['endpoint']) for r in requests)))


def print_playbooks(med, cpu_med):
    print('playbook ch_vm no-change: %7.1f ms   ping: %7.1f ms   ratio %.3f (target <= 1.10)'
          % (med['vm_pb'], med['ping_pb'], med['vm_pb'] / med['ping_pb']))
    print('playbook on %d hosts (forks %d), no target: ch_vm %7.1f ms, ping %7.1f ms wall, ratio %.3f; '
          'CPU %7.1f / %7.1f ms, ratio %.3f, +%.1f ms CPU per host'
          % (HOSTS, HOSTS, med['vm_many'], med['ping_many'], med['vm_many'] / med['ping_many'],
             cpu_med['vm_many'], cpu_med['ping_many'], cpu_med['vm_many'] / cpu_med['ping_many'],
             (cpu_med['vm_many'] - cpu_med['ping_many']) / HOSTS))


if __name__ == '__main__':
    sys.path.insert(0, REPO)
    main()
