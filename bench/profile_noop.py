"""Where the time of a no-change ad hoc `ch_vm` run goes, against `ansible.builtin.ping`, in CPU time
(user + system of the process tree, which a busy shared machine distorts far less than wall time):
  - the whole ad hoc run, and the module process alone (its AnsiballZ file run again by hand,
    kept with ANSIBLE_KEEP_REMOTE_FILES), so controller = whole - module;
  - what the module pays for imports on top of what every module imports (ansible's
    module_utils.basic): httpx with httpcore (which httpx loads when the client is made), the
    standard library's http.client (the alternative), ch_vm's engine (vm_engine, as a no-change
    run loads it), libvirt + lxml (what community.libvirt's virt imports, when python3-libvirt
    is there);
  - what the payload carries: files and bytes of the AnsiballZ zip, the collection's share.
The evidence behind "where we are slower and why" in RESULTS.md (bench/noop.py and
bench/peer_libvirt.py). Alternating, medians.
Run: .venv/bin/python bench/profile_noop.py [rounds]     (default 12; about 2 minutes here)
"""
import base64
import glob
import io
import os
import re
import statistics
import subprocess
import sys
import zipfile

from common import REPO, machine
from harness import (Cleanup, adhoc, ansible_env, bench_host, load_line, need_root, no_validation_spec,
                     target_python, timed_cpu)


def payload(path):
    """(files, bytes, collection files, collection bytes) of an AnsiballZ file's zip."""
    with open(path) as handle:
        match = re.search(r"^zip_data='([^']*)'", handle.read(), re.M)
    if not match:
        return None
    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(match.group(1))))
    infos = archive.infolist()
    ours = [i for i in infos if i.filename.startswith('ansible_collections/cloudhv/')]
    return len(infos), sum(i.file_size for i in infos), len(ours), sum(i.file_size for i in ours)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    need_root()
    python = target_python()
    cleanup = Cleanup()
    res = {}
    try:
        work, binary, kernel = bench_host('chb-prof-', cleanup)
        keep = os.path.join(work, 'keep')
        os.makedirs(keep)
        nospec = no_validation_spec(work)
        env = ansible_env(python, CHSIM_SPEC=nospec)
        keep_env = dict(env, ANSIBLE_KEEP_REMOTE_FILES='1', ANSIBLE_REMOTE_TMP=keep)
        args = {'name': 'prof1', 'kernel': kernel, 'binary': binary, 'state_dir': os.path.join(work, 's'),
                'run_dir': os.path.join(work, 'r')}
        cleanup.add(subprocess.run, adhoc('cloudhv.ch.ch_vm', dict(args, state='absent', purge=True)), env=env,
                    capture_output=True, check=False)
        timed_cpu(adhoc('cloudhv.ch.ch_vm', args), env, 'CHANGED')
        files = {}
        for label, module, margs in (('ch_vm', 'cloudhv.ch.ch_vm', args), ('ping', 'ansible.builtin.ping', '')):
            before = set(glob.glob(os.path.join(keep, '*', 'AnsiballZ_*.py')))
            timed_cpu(adhoc(module, margs), keep_env, 'SUCCESS')
            files[label] = (set(glob.glob(os.path.join(keep, '*', 'AnsiballZ_*.py'))) - before).pop()
        basic = 'import ansible.module_utils.basic'
        imports = {'basic': basic, 'httpx + httpcore': basic + ', httpx, httpcore',
                   'stdlib http.client': basic + ', http.client',
                   'the ch_vm engine': basic + ', httpcore, ansible_collections.cloudhv.ch.plugins.module_utils.vm_engine'}
        peer = os.path.join(REPO, 'build', 'bench-peer-venv', 'bin', 'python')
        if os.path.exists(peer):
            imports['libvirt, lxml.etree'] = basic + ', libvirt, lxml.etree'
        # ansible (for module_utils.basic) and our collection, nothing else of the dev venv
        only_ansible = os.path.join(work, 'only-ansible')
        os.makedirs(only_ansible)
        import ansible
        os.symlink(os.path.dirname(ansible.__file__), os.path.join(only_ansible, 'ansible'))
        imp_env = dict(env, PYTHONPATH=os.pathsep.join([only_ansible, os.path.join(REPO, 'build', 'collections')]))
        for _round in range(rounds):
            for label in ('ch_vm', 'ping'):
                res.setdefault(label + ' ad hoc', []).append(
                    timed_cpu(adhoc('cloudhv.ch.ch_vm', args) if label == 'ch_vm' else adhoc('ansible.builtin.ping', ''),
                              env, 'SUCCESS')[:2])
                res.setdefault(label + ' module process', []).append(timed_cpu([python, files[label]], env)[:2])
            for label, code in imports.items():
                interpreter = peer if 'libvirt' in code else python
                res.setdefault(label, []).append(timed_cpu([interpreter, '-c', code], imp_env)[:2])
        sizes = dict((label, payload(path)) for label, path in files.items())
    finally:
        cleanup.run()
    med = dict((k, (statistics.median(s[0] for s in v) * 1000, statistics.median(s[1] for s in v) * 1000))
               for k, v in res.items())
    print('machine: %s' % machine())
    print(load_line())
    print('module interpreter %s; CH simulator (request validation off); %d rounds, alternating, medians' % (python, rounds))
    print('%-28s %9s %9s' % ('', 'wall', 'CPU'))
    for key in ('ch_vm ad hoc', 'ping ad hoc', 'ch_vm module process', 'ping module process'):
        print('%-28s %6.0f ms %6.0f ms' % (key, med[key][0], med[key][1]))
    ctl = dict((label, med[label + ' ad hoc'][1] - med[label + ' module process'][1]) for label in ('ch_vm', 'ping'))
    print('controller CPU (ad hoc - module): ch_vm %.0f ms, ping %.0f ms: +%.0f ms'
          % (ctl['ch_vm'], ctl['ping'], ctl['ch_vm'] - ctl['ping']))
    print('module CPU: ch_vm %.0f ms, ping %.0f ms: +%.0f ms' % (
        med['ch_vm module process'][1], med['ping module process'][1],
        med['ch_vm module process'][1] - med['ping module process'][1]))
    print('CPU ratio ch_vm/ping ad hoc: %.2f (wall %.2f)'
          % (med['ch_vm ad hoc'][1] / med['ping ad hoc'][1], med['ch_vm ad hoc'][0] / med['ping ad hoc'][0]))
    base = med['basic'][1]
    for key in imports:
        if key != 'basic':
            print('import %-21s +%4.0f ms CPU over importing module_utils.basic (%.0f ms)'
                  % (key, med[key][1] - base, base))
    for label, size in sorted(sizes.items()):
        if size:
            print('AnsiballZ payload of %-6s %3d files, %4.0f KiB uncompressed; from cloudhv.ch: %d files, %.0f KiB'
                  % (label, size[0], size[1] / 1024.0, size[2], size[3] / 1024.0))


if __name__ == '__main__':
    sys.path.insert(0, REPO)
    main()
