#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
module: ch_vm
short_description: Manage the whole lifecycle of a Cloud Hypervisor virtual machine
version_added: 0.1.0
description:
  - Declares a Cloud Hypervisor (CH) VM and converges the host to it on every run, reporting
    C(changed=false) once it is there.
  - The VM's record (desired spec and generated identity such as MACs and tap names) lives in
    C(<state_dir>/vms/<name>/vm.json); each VM runs in its own detached CH process with its API
    socket in O(run_dir).
  - Changes CH can apply to a running VM (vCPUs, RAM within O(memory_hotplug), balloon, adding and
    removing disks and NICs) are applied live; anything else follows O(apply_changes).
  - Every operation holds the VM's lock, so two runs touching the same VM serialize; a run that
    cannot get the lock within 60 seconds fails with a clear "busy" error.
  - For an existing VM, every option the task leaves out keeps the VM's current value, so
    C(name=web1 state=stopped) stops the VM and changes nothing else. Removing something is said
    with an empty list (V([])) for O(disks), O(networks) or O(devices), or an empty dict (V({})) for
    O(balloon), O(vsock), O(platform), O(cloud_init) or O(extra_config). A new VM gets the defaults
    named below; a clone starts from its source's values.
author:
  - cloudhv.ch maintainers (@cloudhv)
options:
  name:
    description:
      - Name of the VM, 1-48 characters from C([A-Za-z0-9_-]), starting with a letter or digit.
    type: str
    required: true
  state:
    description:
      - V(running) boots the VM if needed and resumes it if paused.
      - V(present) prepares the record, disks and cloud-init image; an existing VM's run state is
        left alone (live changes are still applied to a running VM).
      - V(stopped) stops the VMM (the stop ladder, see O(stop_timeout)) and keeps the record.
      - V(paused) boots the VM if needed and pauses it.
      - V(restarted) always reboots a running VM (or stops and starts it when pending changes need a
        new VMM) and boots a stopped one; always changed.
      - V(absent) stops the VM and removes its record; with O(purge) also its managed files.
      - V(standby) snapshots a running or paused VM (memory and device state) into
        C(<state_dir>/vms/<name>/standby) and stops its VMM, freeing the host's memory while keeping
        the guest's running state; its disks stay untouched where they are. V(running) or V(paused)
        restores it in a new VMM and removes the standby snapshot; V(stopped) discards it.
        A VM in standby stays there with V(present). Its disks are not copied (nothing writes them
        once the VMM is gone); their size, modification time and inode are recorded, and waking
        refuses disks that changed meanwhile, since the saved memory would no longer match them.
    type: str
    choices: [running, present, stopped, paused, restarted, absent, standby]
    default: running
  clone_from:
    description:
      - Create this VM as a clone when it does not exist yet; an existing VM is converged as usual and
        never cloned again.
      - The clone restores the snapshot's memory and device state with a new identity - new MACs and
        taps, its own copies of the writable disks (reflink where the filesystem can, sparse copy
        otherwise), its own serial and log files, a new vsock CID, and a regenerated cloud-init image
        with a new C(instance-id) and host name, and a new SMBIOS UUID when the source has one
        (O(platform.uuid); the guest sees it from its next boot, since the tables of the running guest
        are part of the restored memory). The snapshot's C(memory-ranges) is hard-linked into
        C(<state_dir>/vms/<name>/clone-source), not copied.
      - A clone interrupted (module killed, host crash) before it recorded the VM is removed and made
        again by the next run; one interrupted after is finished by restoring again, never cold-booted.
      - Every option the task leaves unset (O(cpus), O(memory), O(disks), O(networks),
        O(cloud_init), ...) keeps the clone's own value, which starts as the source's, as it does for
        any existing VM. Options the task sets are applied after the clone is up, like any change.
    type: dict
    suboptions:
      vm:
        description:
          - The source VM. With O(clone_from.snapshot), clone from that snapshot of it (see
            M(cloudhv.ch.ch_snapshot)); without, fork the running VM - take a temporary snapshot of it,
            pausing it only for the snapshot and its disk copies, and clone from that. The temporary
            snapshot goes once the clone runs (with O(clone_from.memory_restore_mode=ondemand) its
            C(memory-ranges) stays in C(clone-source), since CH reads the guest memory from it).
        type: str
      snapshot:
        description: Name of a snapshot of O(clone_from.vm).
        type: str
      path:
        description: A snapshot directory, instead of O(clone_from.vm).
        type: path
      memory_restore_mode:
        # the text of doc_fragments/restore_options.py (tests/unit/test_restore_options.py)
        description:
          - How CH loads the guest memory on restore. V(copy) reads it all; V(ondemand) maps it lazily
            (needs userfaultfd access).
        type: str
        choices: [copy, ondemand]
        default: copy
      prefault:
        description:
          - Populate the guest memory when restoring (CH's C(prefault)), so the guest does not fault it
            in page by page later. Needs O(clone_from.memory_restore_mode=copy).
        type: bool
        default: false
      disks:
        description:
          - How the clone gets its writable disks.
          - V(copy) gives it its own full copies (reflink where the filesystem can, sparse copy
            otherwise), independent of the snapshot, which can be deleted later.
          - V(overlay) makes each one a qcow2 overlay (C(<disk name>.qcow2), O(disks[].backing_file))
            on the snapshot's copy of the disk - a linked clone. Near-instant on any filesystem and
            small on disk, but the snapshot must stay; M(cloudhv.ch.ch_snapshot) refuses to delete it,
            and O(purge) refuses to remove its VM, while a clone uses it. Needs raw or qcow2 source
            disks and a named snapshot (not a fork of a running VM).
        type: str
        choices: [copy, overlay]
        default: copy
  cpus:
    description: Number of vCPUs at boot. Default V(1) (an existing VM keeps its own).
    type: int
  max_cpus:
    description:
      - The ceiling for live vCPU changes. Defaults to O(cpus).
      - Changing it needs a restart (see O(apply_changes)).
    type: int
  memory:
    description:
      - Guest RAM. An integer is MiB; a string takes units K, M, G, T (powers of 1024), for example
        V(512M), V(2G) or V(2GiB). Default V(512M) (an existing VM keeps its own).
      - Raising it on a running VM within O(memory_hotplug) is applied live; lowering it needs a restart.
    type: raw
  memory_hotplug:
    description: Extra RAM that can be added to the running VM later (same units as O(memory)).
    type: raw
  hugepages:
    description:
      - Back guest RAM with pre-allocated hugepages. The module fails before launching when too few are free.
      - Default V(false) (an existing VM keeps its own).
    type: bool
  shared_memory:
    description: Map guest RAM shared (needed by vhost-user devices and virtio-fs). Default V(false) (an existing VM keeps its own).
    type: bool
  balloon:
    description:
      - A virtio-balloon device. Default none (an existing VM keeps its own); V({}) removes it.
    type: dict
    suboptions:
      size:
        description: Balloon size (memory taken from the guest), same units as O(memory). Changed live. Default V(0).
        type: raw
      deflate_on_oom:
        description: Let the guest deflate the balloon when it runs out of memory. Default V(false).
        type: bool
      free_page_reporting:
        description: Let the guest report free pages to the host. Default V(false).
        type: bool
  firmware:
    description:
      - Firmware to boot (for example C(hypervisor-fw) or C(CLOUDHV.fd)) for cloud images.
      - Exactly one of O(firmware) or O(kernel) is needed when the VM is first created.
    type: path
  kernel:
    description: A kernel to boot directly (with O(cmdline) and O(initramfs)).
    type: path
  cmdline:
    description: Kernel command line, with O(kernel).
    type: str
  initramfs:
    description: Initramfs, with O(kernel).
    type: path
  disks:
    description:
      - Disks in order. Files the module creates (with O(disks[].size) or O(disks[].backing_file))
        are managed and removed only by O(state=absent) with O(purge=true). User files are never deleted.
      - Default none (an existing VM keeps its own).
    type: list
    elements: dict
    suboptions:
      path:
        description: Absolute path of the disk image.
        type: path
        required: true
      readonly:
        description: Attach read-only.
        type: bool
        default: false
      direct:
        description: Open with O_DIRECT.
        type: bool
        default: false
      image_type:
        description: Image format, always sent to CH. Defaults from the file extension (C(.qcow2), C(.vhdx), C(.vhd)), raw otherwise.
        type: str
        choices: [raw, qcow2, vhdx, fixedvhd]
      id:
        description: Device id in CH. Defaults to C(disk<index>).
        type: str
      serial:
        description: Disk serial number shown to the guest.
        type: str
      size:
        description: Create a sparse raw image of this size (same units as O(memory)) when O(disks[].path) does not exist.
        type: raw
      backing_file:
        description: Create a qcow2 overlay at O(disks[].path) on top of this base image (with C(qemu-img)) when the path does not exist.
        type: path
      rate_limit:
        description: I/O limits, translated to CH's C(rate_limiter_config) with one-second token buckets.
        type: dict
        suboptions:
          bandwidth:
            description: Bytes per second.
            type: int
          iops:
            description: Operations per second.
            type: int
  networks:
    description: Network interfaces in order. Default none (an existing VM keeps its own).
    type: list
    elements: dict
    suboptions:
      bridge:
        description:
          - Attach to this existing bridge. The module creates a persistent tap (named C(chv) plus a hash),
            attaches it, sets it up before boot, and removes it when the VM stops or is removed.
          - Exactly one of O(networks[].bridge) and O(networks[].tap).
        type: str
      tap:
        description: Use this existing tap as it is (the module does not create or delete it).
        type: str
      mac:
        description:
          - Guest MAC address. Default a locally administered MAC derived from the host, the VM name and the index, stored in the record.
        type: str
      address:
        description:
          - The guest's IPv4 address on O(networks[].bridge), handed out by the bridge's DHCP server (the O(cloudhv.ch.ch_network#module:dhcp)
            option of M(cloudhv.ch.ch_network)) as a static lease for this NIC's MAC, with the VM's name as host name and DNS name.
            A stock cloud image needs no network configuration for it.
          - It must lie in the bridge's subnet and not be the bridge's own address, and no other VM may claim it. The bridge's DHCP
            server must have been set up first.
          - Without it, a NIC on a bridge with DHCP gets a dynamic lease from the bridge's ranges; its host name is the VM's
            name and becomes a DNS name too.
          - O(state=absent) removes the NIC's lease entries and names.
        type: str
      ip:
        description: IP address CH gives the tap (host side).
        type: str
      mask:
        description: Netmask for O(networks[].ip).
        type: str
      mtu:
        description: MTU of the interface.
        type: int
      num_queues:
        description:
          - RX and TX queues counted together (CH's default 2 is one queue pair). More than 2 makes the tap multi-queue.
        type: int
      id:
        description: Device id in CH. Defaults to C(net<index>).
        type: str
      rate_limit:
        description: Traffic limits, translated to CH's C(rate_limiter_config).
        type: dict
        suboptions:
          bandwidth:
            description: Bytes per second.
            type: int
          pps:
            description: Packets per second.
            type: int
  cloud_init:
    description:
      - Build a NoCloud C(cidata) ISO 9660 image in the VM's directory and attach it read-only.
        It is rebuilt only when its content changes.
      - User data never appears in results or diffs; only a digest does.
      - Left out, an existing VM keeps its image; V({}) detaches it (the file stays until O(purge)).
    type: dict
    suboptions:
      user_data:
        description: A string used as it is, or a dict rendered as C(#cloud-config).
        type: raw
      meta_data:
        description: Meta-data; C(instance-id) and C(local-hostname) default from the VM name.
        type: dict
      network_config:
        description: Network configuration, a string or a dict rendered as YAML.
        type: raw
  serial:
    description:
      - Serial port. V(file) writes to C(<state_dir>/vms/<name>/serial.log); V(socket) listens on C(<run_dir>/<name>.serial.sock).
      - Default V(file) (an existing VM keeps its own).
    type: str
    choices: ['off', 'null', pty, tty, file, socket]
  console:
    description:
      - virtio-console. Default V(off), because CH's own default (tty) is wrong for a detached VMM
        (an existing VM keeps its own).
    type: str
    choices: ['off', 'null', pty, tty, file, socket]
  vsock:
    description:
      - A virtio-vsock device. Default none (an existing VM keeps its own); V({}) removes it.
    type: dict
    suboptions:
      cid:
        description: Guest context id, 3 or more. Needed unless the whole O(vsock) is V({}).
        type: int
      socket:
        description: Host-side unix socket. Default C(<state_dir>/vms/<name>/vsock.sock).
        type: path
  devices:
    description: VFIO devices to pass through, as sysfs paths. Default none (an existing VM keeps its own).
    type: list
    elements: path
  platform:
    description: Platform (SMBIOS) settings. Default none (an existing VM keeps its own); V({}) removes them.
    type: dict
    suboptions:
      uuid:
        description: System UUID.
        type: str
      serial_number:
        description: System serial number.
        type: str
      oem_strings:
        description: OEM strings.
        type: list
        elements: str
  extra_config:
    description:
      - A dict deep-merged last into the VmConfig, for CH options the module does not model.
        CH still validates it; unknown keys are refused by CH and the VM is not created.
    type: dict
  apply_changes:
    description:
      - V(live) applies what CH can change on a running VM and records the rest, returning C(restart_required=true).
      - V(restart) restarts the VM when a change needs it.
      - V(never) only updates the record.
    type: str
    choices: [live, restart, never]
    default: live
  stop_timeout:
    description: Seconds to wait for the guest to power off after the ACPI power button, before the stop ladder goes on.
    type: float
    default: 30
  force:
    description:
      - Skip the graceful steps when stopping (SIGTERM, then SIGKILL).
      - With O(state=absent), also remove a VM whose record cannot be used (damaged, say truncated by a full
        disk or a hand edit, or written by a newer release of the collection), which is refused otherwise.
        Without the record, its VMM is found through its pid file and API socket and stopped, its taps are
        those the collection derives for the VM name, and its run files and the record are removed. Its disks
        and its directory in O(state_dir) stay, even with O(purge=true).
    type: bool
    default: false
  purge:
    description: With O(state=absent), also delete managed disks, the cloud-init image, logs and snapshots.
    type: bool
    default: false
  launcher:
    description:
      - How the VMM is started.
      - V(direct) runs it as a detached process in its own session (stdin C(/dev/null), output
        appended to the VM's C(ch.log)).
      - V(systemd) runs it as a transient systemd unit, C(cloudhv-vmm-<name>.<tag>.service), with
        C(systemd-run); C(<tag>) is 8 hex digits of the SHA-256 of the real path of O(state_dir), so that
        VMs of the same name in two state_dirs do not clash. The VMM then has its own cgroup and survives
        the end of whatever ran Ansible, for example C(ansible-pull) started by a systemd timer, whose
        cgroup is killed when it exits.
        Its output is still appended to the VM's C(ch.log). Needs systemd as PID 1 and the right to
        start system units; when C(systemd-run) fails, its own message is reported.
      - V(auto) is V(direct) in this release, because the V(systemd) launch is not exercised against a
        real systemd in this collection's CI (only against a stand-in for C(systemd-run) and C(systemctl)).
      - A launcher other than V(auto)/V(direct) is kept in the VM's record. When unset, the VM's
        recorded launcher is used (V(auto) for a new VM), so a later task that leaves it out, and
        M(cloudhv.ch.ch_snapshot), restart the VMM the same way. Boot-time start is O(autostart).
    type: str
    choices: [auto, direct, systemd]
  autostart:
    description:
      - Boot the VM when the host starts. Writes C(/etc/systemd/system/cloudhv-vm-<name>.<tag>.service) and
        enables it (C(<tag>) as for O(launcher=systemd), 8 hex digits of the SHA-256 of the real path of
        O(state_dir)); the unit C(cloudhv-<name>.service) that earlier releases wrote for this VM is disabled
        and removed; the unit recreates the VM's taps, starts CH, and creates and boots the VM from
        the stored C(<state_dir>/vms/<name>/vmconfig.json) with C(ch-remote) (expected next to O(binary)).
      - Needs systemd as PID 1; fails clearly, before changing anything, elsewhere.
      - V(false) removes the unit if the collection wrote one; O(state=absent) removes it too.
    type: bool
    default: false
extends_documentation_fragment:
  - cloudhv.ch.common
  - cloudhv.ch.common.action_group
  - cloudhv.ch.common.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: partial
    details: V(state=restarted) always reports a change.
  platform:
    platforms: posix
requirements:
  - httpx >= 0.23.3 on the target
  - pyroute2 >= 0.7.2 on the target (for O(networks) with a bridge)
  - pycdlib >= 1.12 on the target (for O(cloud_init))
  - qemu-img on the target (for O(disks[].backing_file))
seealso:
  - module: cloudhv.ch.ch_vm_info
  - module: cloudhv.ch.ch_network
  - module: cloudhv.ch.ch_snapshot
'''

EXAMPLES = r'''
- name: A cloud-image VM with cloud-init on a bridge
  cloudhv.ch.ch_vm:
    name: web1
    cpus: 2
    max_cpus: 8
    memory: 2G
    memory_hotplug: 6G
    firmware: /usr/local/share/cloud-hypervisor/hypervisor-fw
    disks:
      - path: /var/lib/cloudhv/vms/web1/root.qcow2
        backing_file: /var/lib/images/jammy-server-cloudimg-amd64.img
    networks:
      - bridge: br-vms
    cloud_init:
      user_data:
        users:
          - name: ops
            ssh_authorized_keys: ["{{ lookup('ansible.builtin.file', 'ops.pub') }}"]
        packages: [nginx]

- name: A direct-kernel VM with a scratch disk the module creates
  cloudhv.ch.ch_vm:
    name: builder
    kernel: /srv/kernels/vmlinux
    cmdline: console=ttyS0 root=/dev/vda rw
    disks:
      - path: /srv/images/builder-root.raw
      - path: /var/lib/cloudhv/vms/builder/scratch.raw
        size: 20G

- name: Grow a running VM live (vCPUs up to max_cpus, RAM within memory_hotplug)
  cloudhv.ch.ch_vm:
    name: web1
    cpus: 4
    max_cpus: 8
    memory: 4G
    memory_hotplug: 6G
    firmware: /usr/local/share/cloud-hypervisor/hypervisor-fw
    disks:
      - path: /var/lib/cloudhv/vms/web1/root.qcow2
        backing_file: /var/lib/images/jammy-server-cloudimg-amd64.img
    networks:
      - bridge: br-vms
  register: web1

- name: Stop a VM, waiting up to 60 s for the guest to power off
  cloudhv.ch.ch_vm:
    name: web1
    state: stopped
    stop_timeout: 60

- name: Fork a running VM into a new one (new MACs, taps, disk copies and cloud-init instance-id)
  cloudhv.ch.ch_vm:
    name: web2
    clone_from:
      vm: web1

- name: Clone from a named snapshot taken with cloudhv.ch.ch_snapshot
  cloudhv.ch.ch_vm:
    name: web3
    clone_from:
      vm: web1
      snapshot: before-upgrade

- name: Linked clones - qcow2 overlays on the snapshot's disk copies, near-instant, the snapshot must stay
  cloudhv.ch.ch_vm:
    name: "ci-runner-{{ item }}"
    clone_from:
      vm: golden
      snapshot: ready
      disks: overlay
  loop: [1, 2, 3]

- name: Run the VMM as a transient systemd unit, so it survives the end of an ansible-pull run
  cloudhv.ch.ch_vm:
    name: web4
    kernel: /var/lib/images/vmlinux
    cmdline: console=ttyS0 root=/dev/vda
    disks:
      - path: /var/lib/cloudhv/vms/web4/root.raw
        size: 4G
    launcher: systemd

- name: Free the host's memory but keep the guest's state; state=running brings it back
  cloudhv.ch.ch_vm:
    name: web1
    state: standby

- name: Remove a VM and everything the collection created for it (user disks survive)
  cloudhv.ch.ch_vm:
    name: builder
    state: absent
    purge: true
'''

RETURN = r'''
vm:
  description: The VM after the run (predicted in check mode).
  returned: always
  type: dict
  contains:
    name:
      description: VM name.
      type: str
      returned: always
      sample: web1
    state:
      description: Run state, one of V(running), V(paused), V(stopped), V(standby), V(absent).
      type: str
      returned: always
      sample: running
    pid:
      description: PID of the VMM process, or null.
      type: int
      returned: when the VM exists
      sample: 4242
    api_socket:
      description: The VMM's API socket, or null when not running.
      type: str
      returned: when the VM exists
      sample: /run/cloudhv/web1.sock
    config:
      description: The VmConfig sent (or to be sent) to CH.
      type: dict
      returned: when the VM exists
    live_config:
      description: The VM's config as CH reports it (C(vm.info)), when it is running.
      type: dict
      returned: when the VM exists
    memory_actual_size:
      description: Guest RAM in bytes as CH reports it, when running.
      type: int
      returned: when the VM exists
      sample: 2147483648
    serial_file:
      description: The serial console log, when O(serial=file).
      type: str
      returned: when the VM exists
      sample: /var/lib/cloudhv/vms/web1/serial.log
    console_pty:
      description: The pty of the serial port or console, when one is in V(pty) mode and the VM runs.
      type: str
      returned: when the VM exists
    log_file:
      description: The VMM's log.
      type: str
      returned: when the VM exists
      sample: /var/lib/cloudhv/vms/web1/ch.log
    networks:
      description:
        - NICs with their id, tap, MAC and bridge, and C(address), the guest's IPv4 address on the bridge with C(address_source)
          V(static) (O(networks[].address)) or V(lease) (a dynamic lease in the bridge's DHCP lease file); both V(null) when
          neither is known.
      type: list
      elements: dict
      returned: when the VM exists
      sample: [{id: net0, tap: chv1a2b3c4d5e6f, mac: '02:5e:11:22:33:44', bridge: br-vms, address: 10.77.0.10, address_source: static}]
    disks:
      description: Disks with their id, path and whether the module created (manages) the file.
      type: list
      elements: dict
      returned: when the VM exists
      sample: [{id: disk0, path: /var/lib/cloudhv/vms/web1/root.qcow2, managed: true}]
restart_required:
  description: True when the record holds changes that only a restart of the VM applies.
  returned: always
  type: bool
  sample: false
changes:
  description: Short human-readable descriptions of what was (or in check mode would be) done.
  returned: always
  type: list
  elements: str
  sample: [start the VM]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cloudhv.ch.plugins.module_utils.common import (
    run_module,
    secret_invocation,
)
from ansible_collections.cloudhv.ch.plugins.module_utils.vm_engine import converge_vm
from ansible_collections.cloudhv.ch.plugins.module_utils.vm_options import argument_spec


def action(module):
    result = converge_vm(module.params, check_mode=module.check_mode)
    for warning in result.pop('warnings', []):
        module.warn(warning)
    if not module._diff:
        result.pop('diff', None)
    return result


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run_module(module, action, invocation=secret_invocation(module, ('cloud_init', 'user_data')))


if __name__ == '__main__':
    main()
