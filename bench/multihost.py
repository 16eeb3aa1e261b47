"""Many hosts: 8 namespace hosts, each reached over real SSH, each converging the same VMs; the
playbook's time against --forks 1, 2, 4, 8, for a converge (create + boot), the no-change
re-run and the removal. Forks settings alternate (1 2 4 8, then 8 4 2 1, ...) in one process.

Topology: when extensions/molecule/multihost exists, its create.yml and destroy.yml build and
remove the hosts, run with this script's inventory (8 hosts hv1..hv8, 10.231.0.11-18) next to a
link to the scenario's own group_vars/all.yml, and a run tag of this script's own
(CLOUDHV_MOLECULE_RUN=b<pid>), so a concurrent Molecule run is not disturbed: per host a network
namespace `cloudhv-mh<run>-<host>` joined by a veth to a test bridge, and an sshd in a private
mount namespace (a private /run holding run_dir, the host's own state directory bind-mounted at a
shared path). Otherwise this script's own minimal equivalent: a namespace + veth + `sshd -D -f
<own config>` per host, and a state_dir/run_dir per host in host variables. Either way a generated
key, real SSH, and the test bridge lives in a controller network namespace this script creates,
where Ansible runs (`ip netns exec`): nothing is added to the machine's own network namespace;
traffic stays between the namespaces.

Needs root on Debian (installs openssh-server, openssh-client and iproute2 when missing). Cleans
up on every way out: the VMs, ssh control masters, sshd and every process in the namespaces,
the namespaces, temp files.
The simulator runs without request validation (CHSIM_SPEC pointing nowhere, passed to the hosts'
sshd sessions by the play's environment): a fresh simulator spends 0.3-0.5 s of CPU importing its
OpenAPI validator, which real CH does not.
Run: .venv/bin/python bench/multihost.py [rounds] [vms-per-host]   (default 2 rounds, 2 VMs per host)
"""
import json
import os
import statistics
import subprocess
import sys
import time

from common import REPO, machine
from harness import (CH_VM_LOOP_TASKS, Cleanup, ansible_env, apt_install, bench_host, kill_pids_under, load_line,
                     need_root, no_validation_spec, playbook, stop_process, target_python, timed)

HOSTS = 8
FORKS = (1, 2, 4, 8)

PLAY_ROLE = """- hosts: all
  gather_facts: false
  environment:
    CHSIM_SPEC: "{{ chsim_spec }}"
  roles:
    - role: cloudhv.ch.vms
"""

PLAY_LOOP = """- hosts: all
  gather_facts: false
  environment:
    CHSIM_SPEC: "{{ chsim_spec }}"
""" + CH_VM_LOOP_TASKS


SSHD_CONFIG = """Port 22
ListenAddress {address}
HostKey {work}/ssh_host_ed25519_key
PidFile {hostdir}/sshd.pid
AuthorizedKeysFile {work}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 100
MaxSessions 100
Subsystem sftp /usr/lib/openssh/sftp-server
"""


def use_role():
    return os.path.isfile(os.path.join(REPO, 'roles', 'vms', 'tasks', 'main.yml'))


def sh(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


def quiet(*cmd):
    subprocess.run(cmd, check=False, capture_output=True)


class OwnTopology(object):
    """Controller netns + bridge, one netns + veth + sshd per host (when the Molecule scenario is missing)."""

    kind = "this script's minimal topology (extensions/molecule/multihost missing)"

    def __init__(self, work, cleanup, hosts=HOSTS):
        self.work, self.cleanup, self.hosts = work, cleanup, hosts
        tag = '%04d' % (os.getpid() % 10000)
        self.tag = tag
        self.ctl = 'chb%sc' % tag
        self.subnet = '10.213.%d' % (os.getpid() % 200 + 20)
        self.names = ['chb%sh%d' % (tag, i) for i in range(hosts)]
        self.sshd = []

    def address(self, index):
        return '%s.%d' % (self.subnet, 10 + index)

    def create(self, env, python, binary):
        self._create()
        return self.inventory(python, binary)

    def _create(self):
        work = self.work
        sh('ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', os.path.join(work, 'ssh_host_ed25519_key'))
        sh('ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', os.path.join(work, 'id_ed25519'))
        with open(os.path.join(work, 'id_ed25519.pub')) as src, open(os.path.join(work, 'authorized_keys'), 'w') as dst:
            dst.write(src.read())
        os.chmod(os.path.join(work, 'authorized_keys'), 0o600)
        if not os.path.isdir('/run/sshd'):
            os.makedirs('/run/sshd', 0o755)             # sshd's privilege separation directory
        self.cleanup.add(quiet, 'ip', 'netns', 'delete', self.ctl)
        sh('ip', 'netns', 'add', self.ctl)
        ctl = ['ip', '-n', self.ctl]
        sh(*ctl + ['link', 'set', 'lo', 'up'])
        sh(*ctl + ['link', 'add', 'br0', 'type', 'bridge'])
        sh(*ctl + ['addr', 'add', '%s.1/24' % self.subnet, 'dev', 'br0'])
        sh(*ctl + ['link', 'set', 'br0', 'up'])
        for index, name in enumerate(self.names):
            self.cleanup.add(quiet, 'ip', 'netns', 'delete', name)
            sh('ip', 'netns', 'add', name)
            sh(*ctl + ['link', 'add', 'h%d' % index, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', name])
            sh(*ctl + ['link', 'set', 'h%d' % index, 'master', 'br0', 'up'])
            sh('ip', '-n', name, 'link', 'set', 'lo', 'up')
            sh('ip', '-n', name, 'addr', 'add', '%s/24' % self.address(index), 'dev', 'eth0')
            sh('ip', '-n', name, 'link', 'set', 'eth0', 'up')
            hostdir = os.path.join(work, name)
            os.makedirs(hostdir)
            config = os.path.join(hostdir, 'sshd_config')
            with open(config, 'w') as handle:
                handle.write(SSHD_CONFIG.format(address=self.address(index), work=work, hostdir=hostdir))
            log = open(os.path.join(hostdir, 'sshd.log'), 'w')
            proc = subprocess.Popen(['ip', 'netns', 'exec', name, '/usr/sbin/sshd', '-D', '-e', '-f', config],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
            log.close()
            self.cleanup.add(stop_process, proc)
            self.sshd.append(proc)

    def inventory(self, python, binary):
        path = os.path.join(self.work, 'hosts.ini')
        with open(path, 'w') as handle:
            handle.write('[hv]\n')
            for index, name in enumerate(self.names):
                hostdir = os.path.join(self.work, name)
                handle.write('%s ansible_host=%s cloudhv_state_dir=%s cloudhv_run_dir=%s\n'
                             % (name, self.address(index), os.path.join(hostdir, 's'), os.path.join(hostdir, 'r')))
            handle.write('\n[hv:vars]\nansible_user=root\nansible_ssh_private_key_file=%s\n'
                         'ansible_python_interpreter=%s\ncloudhv_binary=%s\n'
                         % (os.path.join(self.work, 'id_ed25519'), python, binary))
        return path

    def in_ctl(self, cmd):
        return ['ip', 'netns', 'exec', self.ctl] + cmd


MOLECULE = os.path.join(REPO, 'extensions', 'molecule', 'multihost')


class MoleculeTopology(object):
    """extensions/molecule/multihost's create.yml and destroy.yml with the scenario's own
    group_vars/all.yml (linked into this run's inventory) and a run tag of our own
    (CLOUDHV_MOLECULE_RUN), so names never collide with a concurrent Molecule run; the bridge,
    its addresses and the veths live in this run's controller namespace."""

    kind = 'extensions/molecule/multihost create.yml/destroy.yml (8 hosts, own run tag and controller netns)'

    def __init__(self, work, cleanup, hosts=HOSTS):
        self.work, self.cleanup = work, cleanup
        self.run = 'b%04d' % (os.getpid() % 10000)
        self.ctl = 'chb%sc' % self.run[1:]
        self.names = ['hv%d' % (i + 1) for i in range(hosts)]
        self.root = os.path.join(REPO, 'build', 'mol', 'mh-%s' % self.run)      # what group_vars/all.yml makes of it
        self.prefix = 'cloudhv-mh%s-' % self.run

    @staticmethod
    def address(index):
        return '10.231.0.%d' % (11 + index)

    def create(self, env, python, binary):
        env.update(CLOUDHV_MOLECULE_RUN=self.run, MOLECULE_PROJECT_DIRECTORY=REPO)
        inventory = self.inventory(python, binary)
        self.cleanup.rmtree(self.root)
        self.cleanup.add(kill_pids_under, self.root)
        self.cleanup.add(quiet, 'ip', 'netns', 'delete', self.ctl)
        for name in self.names:          # if destroy.yml cannot run: every process in the namespace, then it
            self.cleanup.add(remove_netns, self.prefix + name)
        self.cleanup.add(subprocess.run, self.in_ctl(playbook(os.path.join(MOLECULE, 'destroy.yml'), inventory)),
                         env=env, capture_output=True, check=False)
        sh('ip', 'netns', 'add', self.ctl)
        sh('ip', '-n', self.ctl, 'link', 'set', 'lo', 'up')
        timed(self.in_ctl(playbook(os.path.join(MOLECULE, 'create.yml'), inventory)), env)
        return inventory

    def inventory(self, python, binary):
        directory = os.path.join(self.work, 'inventory')
        os.makedirs(os.path.join(directory, 'group_vars'))
        os.symlink(os.path.join(MOLECULE, 'inventory', 'group_vars', 'all.yml'),
                   os.path.join(directory, 'group_vars', 'all.yml'))
        with open(os.path.join(directory, 'hosts.ini'), 'w') as handle:
            handle.write('[hypervisors]\n')
            for index, name in enumerate(self.names):
                handle.write('%s ansible_host=%s\n' % (name, self.address(index)))
            handle.write('\n[hypervisors:vars]\nansible_user=root\n'
                         'ansible_ssh_private_key_file={{ cloudhv_molecule_root }}/id_ed25519\n'
                         'ansible_python_interpreter=%s\ncloudhv_binary=%s\n'
                         'cloudhv_state_dir={{ cloudhv_molecule_root }}/mnt/state\ncloudhv_run_dir=/run/cloudhv\n'
                         % (python, binary))
        return directory

    def in_ctl(self, cmd):
        return ['ip', 'netns', 'exec', self.ctl] + cmd


def remove_netns(name):
    if not os.path.exists('/run/netns/%s' % name):
        return
    pids = subprocess.run(['ip', 'netns', 'pids', name], capture_output=True, text=True, check=False).stdout.split()
    for pid in pids:
        quiet('kill', '-9', pid)
    quiet('ip', 'netns', 'delete', name)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    per_host = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    need_root()
    apt_install(['openssh-server', 'openssh-client', 'iproute2'])
    cleanup = Cleanup()
    samples = dict(((f, step), []) for f in FORKS for step in ('converge', 'no-change', 'remove'))
    try:
        work, binary, kernel = bench_host('chb-mh-', cleanup)
        python = target_python()
        env = ansible_env(python, ANSIBLE_PIPELINING='True', ANSIBLE_SSH_CONTROL_PATH_DIR=os.path.join(work, 'cp'),
                          ANSIBLE_SSH_ARGS='-o ControlMaster=auto -o ControlPersist=900s -o UserKnownHostsFile=/dev/null '
                                           '-o StrictHostKeyChecking=no -o LogLevel=ERROR')
        topo = (MoleculeTopology if os.path.isfile(os.path.join(MOLECULE, 'create.yml')) else OwnTopology)(work, cleanup)
        inventory = topo.create(env, python, binary)
        cleanup.add(kill_pids_under, os.path.join(work, 'cp'))    # ssh control masters, before their sshd goes
        play = os.path.join(work, 'play.yml')
        with open(play, 'w') as handle:
            handle.write(PLAY_ROLE if use_role() else PLAY_LOOP)

        def vars_file(filename='vars.json', **extra):
            path = os.path.join(work, filename)
            with open(path, 'w') as handle:
                json.dump({'chsim_spec': no_validation_spec(work),
                           'cloudhv_vms': [dict(dict(name='vm%d' % i, kernel=kernel), **extra)
                                           for i in range(per_host)]}, handle)
            return ['-e', '@' + path]

        def run(forks, **extra):
            return timed(topo.in_ctl(playbook(play, inventory, forks, vars_file(**extra))), env)[0]

        cleanup.add(subprocess.run, topo.in_ctl(playbook(play, inventory, 8, vars_file('remove-all.json', state='absent', purge=True))),
                    env=env, capture_output=True, check=False)
        # sshd up and control masters open on every host (not timed)
        deadline = time.monotonic() + 60
        while True:
            proc = subprocess.run(topo.in_ctl([os.path.join(os.path.dirname(sys.executable), 'ansible'), 'all', '-i',
                                               inventory, '-f', '8', '-m', 'ansible.builtin.ping']),
                                  env=env, capture_output=True, text=True, check=False)
            if proc.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError('namespace hosts unreachable:\n%s\n%s' % (proc.stdout[-2000:], proc.stderr[-2000:]))
            time.sleep(0.5)
        run(8)                                         # warm-up converge + remove, not counted
        run(8, state='absent', purge=True)
        for index in range(rounds):
            for forks in (FORKS if index % 2 == 0 else tuple(reversed(FORKS))):
                samples[(forks, 'converge')].append(run(forks))
                samples[(forks, 'no-change')].append(run(forks))
                samples[(forks, 'remove')].append(run(forks, state='absent', purge=True))
    finally:
        cleanup.run()
    print('machine: %s' % machine())
    print(load_line())
    print('%d namespace hosts over SSH (pipelining, ControlPersist), %d VMs per host (%d in all), %s, CH simulator '
          '(request validation off); '
          'module interpreter %s; %d rounds, medians' % (
              HOSTS, per_host, HOSTS * per_host,
              'role cloudhv.ch.vms' if use_role() else 'loop over cloudhv.ch.ch_vm', target_python(), rounds))
    print('topology: %s' % topo.kind)
    print('%6s | %-22s | %-22s | %-22s' % ('forks', 'converge  (speedup)', 'no-change (speedup)', 'remove    (speedup)'))
    for forks in FORKS:
        cells = []
        for step in ('converge', 'no-change', 'remove'):
            t = statistics.median(samples[(forks, step)])
            t1 = statistics.median(samples[(1, step)])
            cells.append('%7.1f s   (x%.2f)' % (t, t1 / t))
        print('%6d | %-22s | %-22s | %-22s' % (forks, cells[0], cells[1], cells[2]))
    print('CPUs on this machine: %d (all 8 "hosts" and the controller share them)' % (os.cpu_count() or 0))


if __name__ == '__main__':
    sys.path.insert(0, REPO)
    main()
