"""CH API requests per operation, for every module, counted from the simulator's request log
(CHSIM_REQUEST_LOG: one JSON line per request, from every VMM process). Each operation is one ad
hoc `ansible localhost -m ...` run, as a user would type it; the log is emptied before each.

Target: a no-change ch_vm run makes at most 2 requests (issue 7). For the other operations the
table shows the smallest number of requests CH's API allows for the operation and the excess.
Run: .venv/bin/python bench/api_economy.py        (about a minute)
"""
import collections
import os
import subprocess
import sys

from common import REPO, machine
from harness import (Cleanup, adhoc, ansible_env, bench_host, load_line, need_root, read_requests,
                     target_python, timed)

# (label, module, args, expected ad hoc status, the fewest requests CH's API allows, why)
MINIMUM = {
    'create+boot': (2, 'vm.create, vm.boot (ping/info optional)'),
    'no-change': (1, 'vm.info'),
    'pause': (2, 'vm.info, vm.pause'),
    'resume': (2, 'vm.info, vm.resume'),
    'resize vCPUs (live)': (2, 'vm.info, vm.resize'),
    'resize RAM (live)': (2, 'vm.info, vm.resize'),
    'stop': (2, 'vm.info, vm.power-button (the VMM exits by itself)'),
    'boot a stopped VM': (2, 'vm.create, vm.boot'),
    'absent (running VM)': (2, 'vm.info, vm.power-button'),
    'ch_vm_info, 1 running VM': (1, 'vm.info per running VM'),
    'ch_vm_info, 3 running VMs': (3, 'vm.info per running VM'),
    'ch_snapshot present': (4, 'vm.info, vm.pause, vm.snapshot, vm.resume'),
    'ch_snapshot present (exists)': (0, 'nothing: the snapshot is a directory on disk'),
    'ch_snapshot restored': (3, 'old VMM: vm.info + vmm.shutdown (or power-button); new VMM: vm.restore (resume=true)'),
    'ch_snapshot absent': (0, 'nothing: files only'),
    'clone_from snapshot': (1, 'new VMM: vm.restore (resume=true)'),
    'clone_from running VM (fork)': (5, 'source: vm.info, vm.pause, vm.snapshot, vm.resume; new VMM: vm.restore'),
}


def summarize(requests):
    counts = collections.Counter('%s %s' % (r['method'], r['endpoint']) for r in requests)
    pids = len(set(r['pid'] for r in requests))
    text = ', '.join('%s%s' % (k, ' x%d' % v if v > 1 else '') for k, v in counts.items())
    return text + (' [%d VMMs]' % pids if pids > 1 else '')


def main():
    need_root()
    snapshot_module = os.path.exists(os.path.join(REPO, 'plugins', 'modules', 'ch_snapshot.py'))
    cleanup = Cleanup()
    rows = []
    try:
        work, binary, kernel = bench_host('chb-eco-', cleanup)
        log = os.path.join(work, 'requests.jsonl')
        env = ansible_env(target_python(), CHSIM_REQUEST_LOG=log)
        common = {'binary': binary, 'state_dir': os.path.join(work, 's'), 'run_dir': os.path.join(work, 'r')}
        vm = dict(common, name='eco1', kernel=kernel, cpus=1, max_cpus=2, memory='512M', memory_hotplug='512M')

        def ch_vm(**over):
            return 'cloudhv.ch.ch_vm', dict(vm, **over)

        for name in ('eco1', 'eco2', 'eco3'):
            cleanup.add(subprocess.run, adhoc('cloudhv.ch.ch_vm', dict(common, name=name, state='absent', purge=True)),
                        env=env, capture_output=True, check=False)
        ops = [
            ('create+boot',) + ch_vm() + ('CHANGED',),
            ('no-change',) + ch_vm() + ('SUCCESS',),
            ('pause',) + ch_vm(state='paused') + ('CHANGED',),
            ('resume',) + ch_vm() + ('CHANGED',),
            ('resize vCPUs (live)',) + ch_vm(cpus=2) + ('CHANGED',),
            ('resize RAM (live)',) + ch_vm(cpus=2, memory='1G') + ('CHANGED',),
            ('no-change',) + ch_vm(cpus=2, memory='1G') + ('SUCCESS',),
            ('ch_vm_info, 1 running VM', 'cloudhv.ch.ch_vm_info', common, 'SUCCESS'),
        ]
        snap = dict(common, vm='eco1', name='snap1')
        if snapshot_module:
            ops += [
                ('ch_snapshot present', 'cloudhv.ch.ch_snapshot', snap, 'CHANGED'),
                ('ch_snapshot present (exists)', 'cloudhv.ch.ch_snapshot', snap, 'SUCCESS'),
                ('ch_snapshot restored', 'cloudhv.ch.ch_snapshot', dict(snap, state='restored'), 'CHANGED'),
                ('clone_from snapshot', 'cloudhv.ch.ch_vm',
                 dict(common, name='eco2', clone_from={'vm': 'eco1', 'snapshot': 'snap1'}), 'CHANGED'),
                ('clone_from running VM (fork)', 'cloudhv.ch.ch_vm',
                 dict(common, name='eco3', clone_from={'vm': 'eco1'}), 'CHANGED'),
                ('ch_vm_info, 3 running VMs', 'cloudhv.ch.ch_vm_info', common, 'SUCCESS'),
                ('ch_snapshot absent', 'cloudhv.ch.ch_snapshot', dict(snap, state='absent'), 'CHANGED'),
            ]
        ops += [
            ('stop',) + ch_vm(cpus=2, memory='1G', state='stopped') + ('CHANGED',),
            ('boot a stopped VM',) + ch_vm(cpus=2, memory='1G') + ('CHANGED',),
            ('absent (running VM)', 'cloudhv.ch.ch_vm', dict(common, name='eco1', state='absent', purge=True),
             'CHANGED'),
        ]
        for label, module, args, expect in ops:
            if os.path.exists(log):
                os.unlink(log)
            elapsed = timed(adhoc(module, args), env, expect)[0]
            requests = read_requests(log)
            rows.append((label, module, len(requests), summarize(requests), elapsed))
    finally:
        cleanup.run()
    print('machine: %s' % machine())
    print(load_line())
    print('CH: simulator (request log); each operation one ad hoc run; module interpreter: %s' % target_python())
    print('%-30s %-22s %4s %4s  %s' % ('operation', 'module', 'reqs', 'min', 'requests'))
    for label, module, count, text, _elapsed in rows:
        minimum = MINIMUM.get(label, (None, ''))[0]
        print('%-30s %-22s %4d %4s  %s'
              % (label, module.split('.')[-1], count, '' if minimum is None else minimum, text or '-'))
    if not snapshot_module:
        print('ch_snapshot / clone_from: not yet available (plugins/modules/ch_snapshot.py does not exist)')
    nochange = [r for r in rows if r[0] == 'no-change']
    worst = max(r[2] for r in nochange)
    print('no-change ch_vm run: %d requests (target <= 2) -> %s' % (worst, 'met' if worst <= 2 else 'NOT met'))


if __name__ == '__main__':
    sys.path.insert(0, REPO)
    main()
