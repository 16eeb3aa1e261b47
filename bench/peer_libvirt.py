"""cloudhv.ch.ch_vm (driving the CH simulator) against its closest peer, community.libvirt's `virt`
module (driving a real libvirt daemon and QEMU with TCG), for the same steps, each one ad hoc
`ansible localhost -m ...`: define, start, no-change run, stop, remove. Both sides alternate
step by step in one process, N rounds (who goes first alternates too); prints medians, ratios
ours/theirs, and the `ansible.builtin.ping` floor every ad hoc run pays.

Needs root on Debian 12 and changes the machine (not part of the test command):
  - installs the Debian packages it misses: libvirt-daemon libvirt-daemon-driver-qemu
    qemu-system-x86 libvirt-clients python3-libvirt python3-venv (not libvirt-daemon-system:
    it pulls in systemd as init);
  - creates the system user `libvirt-qemu` if missing (libvirtd's QEMU driver refuses to start
    without it; libvirt-daemon-system would have created it) and leaves it;
  - when no libvirtd answers on /run/libvirt/libvirt-sock, starts virtlogd and libvirtd in the
    foreground with their logs in a temp dir and stops them at the end; if /etc/libvirt/qemu.conf
    is missing it writes one with user/group root for the run and removes it afterwards
    (without it QEMU runs as libvirt-qemu, which cannot open /dev/kvm here, and libvirt 9.0 then
    declares its capability cache stale and re-probes QEMU - about 4 s - on every start);
    libvirt's own state directories (/var/lib/libvirt, /var/cache/libvirt, /run/libvirt,
    /var/log/libvirt) stay, like a package's;
  - downloads the `ansible` 12.3.0 wheel from PyPI into build/bench-dl and extracts only
    ansible_collections/community/libvirt into build/bench-collections (nothing is installed);
  - builds build/bench-peer-venv: Debian's python3 with --system-site-packages (for Debian's
    python3-libvirt) plus requirements.txt and lxml (virt needs both) from PyPI. It is the module
    interpreter of BOTH sides, so neither pays for a different Python.
Cleans up on every way out: its libvirt domain (destroy + undefine, with its QEMU log), its VM,
simulator processes, the daemons it started, temp files.

The simulator validates every request body against CH's OpenAPI spec, and a fresh simulator
needs 0.3-0.5 s to import its validator before it answers vm.create (see bench/clone.py): a cost
of the test stand-in that real CH and QEMU do not have. Ours therefore runs the simulator with
validation off (CHSIM_SPEC pointing nowhere), unless --validate is given.

Run: .venv/bin/python bench/peer_libvirt.py [--validate] [rounds]   (default 10 rounds, ~5 minutes here)
"""
import os
import socket
import statistics
import subprocess
import sys
import time
import zipfile

from common import REPO, machine, median_ms
from harness import (BENCH_COLLECTIONS, BUILD, Cleanup, adhoc, ansible_env, apt_install, bench_host,
                     load_line, need_root, no_validation_spec, stop_process, timed, timed_cpu)

ANSIBLE_VERSION = '12.3.0'          # the community package for ansible-core 2.19
PEER_VENV = os.path.join(BUILD, 'bench-peer-venv')
DEBIAN_PACKAGES = ['libvirt-daemon', 'libvirt-daemon-driver-qemu', 'qemu-system-x86', 'libvirt-clients',
                   'python3-libvirt', 'python3-venv']
LIBVIRT_SOCK = '/run/libvirt/libvirt-sock'
QEMU_CONF = '/etc/libvirt/qemu.conf'
URI = 'qemu:///system'
STEPS = ('define', 'start', 'no-change', 'stop', 'remove')

DOMAIN_XML = """<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>
</domain>
"""


def community_libvirt():
    """Extract community.libvirt from the `ansible` wheel (downloaded, never installed)."""
    dest = os.path.join(BENCH_COLLECTIONS, 'ansible_collections', 'community', 'libvirt')
    if os.path.isfile(os.path.join(dest, 'plugins', 'modules', 'virt.py')):
        return dest
    dl = os.path.join(BUILD, 'bench-dl')
    wheel = os.path.join(dl, 'ansible-%s-py3-none-any.whl' % ANSIBLE_VERSION)
    if not os.path.exists(wheel):
        subprocess.run([sys.executable, '-m', 'pip', 'download', '-q', '--disable-pip-version-check', '--no-deps',
                        'ansible==%s' % ANSIBLE_VERSION, '-d', dl], check=True)
    prefix = 'ansible_collections/community/libvirt/'
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith(prefix) and not name.endswith('/'):
                archive.extract(name, BENCH_COLLECTIONS)
    return dest


def peer_python():
    python = os.path.join(PEER_VENV, 'bin', 'python')
    probe = [python, '-c', 'import libvirt, lxml.etree, httpx, pyroute2, pycdlib, yaml']
    if not os.path.exists(python) or subprocess.run(probe, capture_output=True, check=False).returncode:
        subprocess.run(['/usr/bin/python3', '-m', 'venv', '--system-site-packages', PEER_VENV], check=True)
        subprocess.run([python, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', 'lxml', '-r',
                        os.path.join(REPO, 'requirements.txt')], check=True)
        subprocess.run(probe, check=True)
    return python


def libvirt_answers():
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(LIBVIRT_SOCK)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def start_libvirt(work, cleanup):
    """Reuse a running libvirtd; otherwise start virtlogd + libvirtd (foreground, our own logs)."""
    if libvirt_answers():
        return 'already running (reused, left running)'
    if subprocess.run(['getent', 'passwd', 'libvirt-qemu'], capture_output=True, check=False).returncode:
        subprocess.run(['useradd', '--system', '--user-group', '--home-dir', '/var/lib/libvirt', '--no-create-home',
                        '--shell', '/usr/sbin/nologin', 'libvirt-qemu'], check=True)
    if not os.path.exists(QEMU_CONF):
        with open(QEMU_CONF, 'w') as handle:
            handle.write('# written by cloudhv.ch bench/peer_libvirt.py for one run; removed afterwards\n'
                         'user = "root"\ngroup = "root"\n')
        cleanup.add(os.unlink, QEMU_CONF)
    procs = []
    for daemon in ('virtlogd', 'libvirtd'):
        conf = os.path.join(work, '%s.conf' % daemon)
        with open(conf, 'w') as handle:
            handle.write('log_outputs="3:file:%s"\n' % os.path.join(work, '%s.log' % daemon))
        out = open(os.path.join(work, '%s.out' % daemon), 'w')
        proc = subprocess.Popen(['/usr/sbin/%s' % daemon, '-f', conf, '-p', os.path.join(work, '%s.pid' % daemon)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        out.close()
        cleanup.add(stop_process, proc, 30)
        procs.append(proc)
    deadline = time.monotonic() + 30
    while not libvirt_answers():
        if time.monotonic() > deadline or procs[-1].poll() is not None:
            raise RuntimeError('libvirtd did not come up; see %s' % work)
        time.sleep(0.1)
    # the daemon answers before its QEMU driver is ready: wait for a real call
    while subprocess.run(['virsh', '-c', URI, 'list'], capture_output=True, check=False).returncode:
        if time.monotonic() > deadline:
            raise RuntimeError('libvirtd does not answer virsh; see %s' % work)
        time.sleep(0.2)
    return 'started by this benchmark (virtlogd + libvirtd, stopped at the end)'


def remove_domain(name):
    subprocess.run(['virsh', '-c', URI, 'destroy', name], capture_output=True, check=False)
    subprocess.run(['virsh', '-c', URI, 'undefine', name], capture_output=True, check=False)
    for log in ('/var/log/libvirt/qemu/%s.log' % name,):
        if os.path.exists(log):
            os.unlink(log)


def main():
    validate = '--validate' in sys.argv
    args = [a for a in sys.argv[1:] if a != '--validate']
    rounds = int(args[0]) if args else 10
    need_root()
    apt_install(DEBIAN_PACKAGES)
    community_libvirt()
    python = peer_python()
    cleanup = Cleanup()
    try:
        work, binary, kernel = bench_host('chb-peer-', cleanup)
        daemon = start_libvirt(work, cleanup)
        env = ansible_env(python)
        if not validate:
            env['CHSIM_SPEC'] = no_validation_spec(work)
        domain = 'chbench-peer-%d' % os.getpid()
        cleanup.add(remove_domain, domain)
        vm_args = 'name=chbpeer kernel=%s binary=%s state_dir=%s run_dir=%s' % (
            kernel, binary, os.path.join(work, 's'), os.path.join(work, 'r'))
        cleanup.add(subprocess.run, adhoc('cloudhv.ch.ch_vm', vm_args + ' state=absent purge=true'),
                    env=env, capture_output=True, check=False)
        ours = {
            'define': (adhoc('cloudhv.ch.ch_vm', vm_args + ' state=present'), 'CHANGED'),
            'start': (adhoc('cloudhv.ch.ch_vm', vm_args + ' state=running'), 'CHANGED'),
            'no-change': (adhoc('cloudhv.ch.ch_vm', vm_args + ' state=running'), 'SUCCESS'),
            'stop': (adhoc('cloudhv.ch.ch_vm', vm_args + ' state=stopped'), 'CHANGED'),
            'remove': (adhoc('cloudhv.ch.ch_vm', vm_args + ' state=absent purge=true'), 'CHANGED'),
        }
        theirs = {
            'define': (adhoc('community.libvirt.virt', {'command': 'define', 'xml': DOMAIN_XML % domain,
                                                        'uri': URI}), 'CHANGED'),
            'start': (adhoc('community.libvirt.virt', 'name=%s state=running uri=%s' % (domain, URI)), 'CHANGED'),
            'no-change': (adhoc('community.libvirt.virt', 'name=%s state=running uri=%s' % (domain, URI)), 'SUCCESS'),
            'stop': (adhoc('community.libvirt.virt', 'name=%s state=destroyed uri=%s' % (domain, URI)), 'CHANGED'),
            'remove': (adhoc('community.libvirt.virt', 'name=%s command=undefine uri=%s' % (domain, URI)), 'CHANGED'),
        }
        ping = adhoc('ansible.builtin.ping', '')
        # one warm-up round of each side (caches, QEMU capability probe), not counted
        for step in STEPS:
            timed(ours[step][0], env, ours[step][1])
            timed(theirs[step][0], env, theirs[step][1])
        samples = dict(((side, step), []) for side in ('ours', 'theirs') for step in STEPS)
        samples['ping'] = []
        cpu = dict((key, []) for key in samples)
        for index in range(rounds):
            order = ('ours', 'theirs') if index % 2 == 0 else ('theirs', 'ours')
            wall, used, _out = timed_cpu(ping, env, 'SUCCESS')
            samples['ping'].append(wall)
            cpu['ping'].append(used)
            for step in STEPS:
                for side in order:
                    cmd, expect = (ours if side == 'ours' else theirs)[step]
                    wall, used, _out = timed_cpu(cmd, env, expect)
                    samples[(side, step)].append(wall)
                    cpu[(side, step)].append(used)
    finally:
        cleanup.run()
    floor = median_ms(samples['ping'])
    print('machine: %s' % machine())
    print(load_line())
    print('ours: cloudhv.ch.ch_vm -> CH simulator (request validation %s); theirs: community.libvirt.virt (ansible %s) -> libvirt %s + QEMU '
          '%s (TCG, 64 MiB, no disk, no boot device); libvirtd %s'
          % ('on' if validate else 'off', ANSIBLE_VERSION, version('libvirt-daemon'), version('qemu-system-x86'), daemon))
    print('each step an ad hoc `ansible localhost -m ...`; module interpreter for both: %s (Debian python3 + '
          'python3-libvirt + requirements.txt + lxml); %d rounds, alternating, medians' % (python, rounds))
    print('ad hoc ansible.builtin.ping (the floor every step pays): %.0f ms' % floor)
    print('%-10s %10s %10s %7s %14s %14s %7s'
          % ('step', 'ours', 'theirs', 'ratio', 'ours-ping', 'theirs-ping', 'ratio'))
    for step in STEPS:
        o, t = median_ms(samples[('ours', step)]), median_ms(samples[('theirs', step)])
        print('%-10s %7.0f ms %7.0f ms %7.2f %11.0f ms %11.0f ms %7s'
              % (step, o, t, o / t, o - floor, t - floor,
                 '%.2f' % ((o - floor) / (t - floor)) if t - floor > 5 else 'n/a'))
    o = sum(median_ms(samples[('ours', s)]) for s in STEPS)
    t = sum(median_ms(samples[('theirs', s)]) for s in STEPS)
    print('%-10s %7.0f ms %7.0f ms %7.2f' % ('all 5', o, t, o / t))
    floor = median_ms(cpu['ping'])
    print('CPU time of the ansible process tree (controller + module; not the VMM, libvirtd or QEMU), medians; '
          'ping: %.0f ms' % floor)
    for step in STEPS:
        o, t = median_ms(cpu[('ours', step)]), median_ms(cpu[('theirs', step)])
        print('%-10s %7.0f ms %7.0f ms %7.2f %11.0f ms %11.0f ms' % (step, o, t, o / t, o - floor, t - floor))
    spread = dict((k, statistics.pstdev(v) * 1000.0) for k, v in samples.items())
    print('spread (population stdev, ms): %s' % ', '.join(
        '%s %s %.0f' % (k[0], k[1], v) if isinstance(k, tuple) else '%s %.0f' % (k, v)
        for k, v in sorted(spread.items(), key=lambda kv: str(kv[0]))))
    print('stop: ours is state=stopped (ACPI power button, the simulated guest powers off at once, VMM exits); '
          'theirs is state=destroyed (virt state=shutdown returns before the guest is off and this guest has no OS '
          'to obey it, community.libvirt #63)')


def version(package):
    proc = subprocess.run(['dpkg-query', '-W', '-f=${Version}', package], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or '?'


if __name__ == '__main__':
    main()
