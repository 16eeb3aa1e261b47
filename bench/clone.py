"""A clone from a snapshot against a full copy of the same snapshot directory.

The source VM has 2 GiB of memory (memory-ranges sparse, 256 MiB written) and a 4 GiB raw disk
(512 MiB written). We time, as medians over the rounds:
  * clone: ch_vm's engine creating a running VM with clone_from (memory-ranges hard-linked, the
    disk copied with a reflink or a sparse copy, config rewritten, new VMM, vm.restore);
  * cp:    `cp -a --sparse=always <snapshot dir> <dest>`.
Each timed operation starts after `sync` and a short pause, so neither pays for the other's
writeback or for the discards of the files removed between rounds (ext4 mounted with -o discard).

The simulator validates request bodies against the OpenAPI spec, and a fresh simulator process
needs 0.3-0.5 s to import its validator before it answers vm.restore: a cost real CH does not have.
The bench switches validation off (CHSIM_SPEC pointing nowhere) for the clone's VMM; the tests
keep it on. Note the other way round, that the simulator does not read memory-ranges on restore
while CH (memory_restore_mode=copy) reads the 256 MiB written into it.

Target (issue 5): clone / cp <= 0.1 where the filesystem has reflinks, <= 0.6 without.

It also times a linked clone (clone_from.disks=overlay: qcow2 overlays on the snapshot's disk
copies instead of copies; the snapshot must then stay) against the same cp.

On a filesystem with reflinks, coreutils >= 9.0 `cp` reflinks by default (--reflink=auto), so the
literal baseline copies no data either; there the bench also times a full copy
(`cp -a --sparse=always --reflink=never`) and prints the ratio against both.
Run: .venv/bin/python bench/clone.py [rounds] [work dir on the filesystem to test]

Results (2026-11, AMD EPYC 2 vCPUs, Debian 12, Python 3.11; the machine shared with other test
runs, load 4-7, so single runs swing a lot):
* ext4 (/tmp, no reflink, mounted with discard), the steadiest run (stdev < 90 ms): clone 609 ms
  (files 518 ms), cp 438 ms: ratio 1.39, target 0.6 NOT met. Noisier runs gave 0.28-0.82, all
  from cp outliers. The files alone cost more than cp: the clone fsyncs its 512 MiB disk copy
  (so a host crash never leaves a half-copied disk behind a recorded VM) and cp does not sync.
  Even without fsync an eager copy cannot reach 0.6 here: the disk holds 512 of the snapshot's
  768 MiB of data (0.67) and copy_file_range moves bytes no faster than cp's read/write.
* Second session, ext4 /tmp on a quiet machine (load < 1), two runs (5 and 7 rounds): clone
  median 294 / 291 ms, cp 782 / 997 ms (cp ranged 710-1915 ms): ratio 0.38 / 0.29, "met" - but
  with the first session's 1.39 this says the full-copy clone's ratio is decided by the disk's
  writeback and discard state, not by the code; do not rely on it either way.
  Linked clone (clone_from.disks=overlay): 43.4 / 44.9 ms (max 74), ratio 0.055 / 0.045: met,
  and stable (no data is copied; the time is the overlay's qemu-img create, the simulator's
  VMM start and vm.restore).
* Third session (2026-12-02, load about 2): ext4 /tmp, 5 rounds: clone 488 ms, cp 1245 ms, ratio
  0.39 (met; stdev of the clone 735 ms: one 2.3 s round); linked clone 90 ms, 0.072 (met).
  XFS reflink=1 on a loop device, 3 rounds: clone 87 ms (files 4 ms), cp 2.9 ms (reflinks):
  ratio 30 (NOT met, literal baseline), 0.017 against cp --reflink=never (5.2 s): met.
* Fourth session (2026-12-04, quiet machine): ext4 /tmp, 5 rounds: clone 396 ms (files 311 ms),
  cp 922 ms, ratio 0.43 (met); linked clone 75 ms, 0.081 (met).
* XFS with reflink=1 (loop device): clone 90-95 ms (files 3-4 ms, the rest is the simulator's
  VMM start and vm.restore), cp 4 ms because coreutils 9 cp reflinks too: ratio ~21 against the
  literal baseline, NOT met; 0.016 against a full copy (cp --reflink=never, 5.8 s on that
  loop device), met.
"""
import fcntl
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import machine, median_ms, setup_paths, simulator

setup_paths()
from ansible_collections.cloudhv.ch.plugins.module_utils import images  # noqa: E402
from ansible_collections.cloudhv.ch.plugins.module_utils.vm_engine import VmEngine  # noqa: E402
from ansible_collections.cloudhv.ch.plugins.module_utils.snapshot_engine import SnapshotManager  # noqa: E402

MIB = 1 << 20
SETTLE = 0.5


def has_reflink(directory):
    src = os.path.join(directory, '.reflink-probe-src')
    dst = os.path.join(directory, '.reflink-probe-dst')
    with open(src, 'wb') as handle:
        handle.write(b'x' * 4096)
    try:
        with open(src, 'rb') as sfd, open(dst, 'wb') as dfd:
            fcntl.ioctl(dfd.fileno(), images.FICLONE, sfd.fileno())
        return True
    except OSError:
        return False
    finally:
        for path in (src, dst):
            if os.path.exists(path):
                os.unlink(path)


def write_data(path, size, offset=0):
    block = os.urandom(MIB)
    with open(path, 'r+b') as handle:
        handle.seek(offset)
        for _index in range(size // MIB):
            handle.write(block)
        handle.flush()
        os.fsync(handle.fileno())


def settle():
    os.sync()
    time.sleep(SETTLE)
    os.sync()


def params(base, **extra):
    out = dict(base)
    out.update(extra)
    return out


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    parent = sys.argv[2] if len(sys.argv) > 2 else None
    work = tempfile.mkdtemp(prefix='cloudhv-bench-clone-', dir=parent)
    run_dir = tempfile.mkdtemp(prefix='chv-bench-')
    bin_dir = tempfile.mkdtemp(prefix='cloudhv-bench-bin-')
    binary = simulator(bin_dir)
    kernel = os.path.join(work, 'vmlinux')
    with open(kernel, 'wb') as handle:
        handle.write(b'fake kernel')
    base = {'binary': binary, 'state_dir': os.path.join(work, 'state'), 'run_dir': run_dir, 'api_timeout': 30}
    disk = os.path.join(work, 'state', 'vms', 'src', 'root.raw')
    reflink = has_reflink(work)
    os.environ['CHSIM_SPEC'] = os.path.join(work, 'no-spec-for-the-bench.yaml')
    try:
        VmEngine(params(base, name='src', kernel=kernel, memory='2G',
                        disks=[{'path': disk, 'size': '4G'}])).converge('running')
        write_data(disk, 512 * MIB)
        snap = SnapshotManager(params(base, vm='src', name='s', state='present', include_disks=True)).run()
        snap_dir = snap['snapshot']['path']
        write_data(os.path.join(snap_dir, 'memory-ranges'), 256 * MIB, offset=512 * MIB)
        print('snapshot: %s, %.0f MiB on disk (memory-ranges %d MiB apparent, disk copy %d MiB apparent)'
              % (snap_dir, images.disk_usage(snap_dir) / MIB,
                 os.path.getsize(os.path.join(snap_dir, 'memory-ranges')) // MIB,
                 os.path.getsize(os.path.join(snap_dir, 'disks', 'disk0-root.raw')) // MIB))
        clone_times, cp_times, files_times, full_times, linked_times = [], [], [], [], []
        for index in range(rounds):
            settle()
            start = time.monotonic()
            result = VmEngine(params(base, name='c%d' % index, clone_from={'vm': 'src', 'snapshot': 's'}))\
                .converge('running')
            clone_times.append(time.monotonic() - start)
            assert result['vm']['state'] == 'running', result
            VmEngine(params(base, name='c%d' % index, purge=True, force=True)).converge('absent')
            # a linked clone: qcow2 overlays on the snapshot's disk copies instead of copies
            settle()
            start = time.monotonic()
            result = VmEngine(params(base, name='l%d' % index,
                                     clone_from={'vm': 'src', 'snapshot': 's', 'disks': 'overlay'})).converge('running')
            linked_times.append(time.monotonic() - start)
            assert result['vm']['state'] == 'running', result
            VmEngine(params(base, name='l%d' % index, purge=True, force=True)).converge('absent')
            # the data part of a clone alone: hard link + disk copy, as the clone does them
            settle()
            dest = os.path.join(work, 'files%d' % index)
            start = time.monotonic()
            images.copy_tree(snap_dir, dest, hardlink=('memory-ranges',))
            images.copy_file(os.path.join(snap_dir, 'disks', 'disk0-root.raw'), os.path.join(dest, 'root.raw'),
                             overwrite=False)
            files_times.append(time.monotonic() - start)
            shutil.rmtree(dest)
            settle()
            dest = os.path.join(work, 'cp%d' % index)
            start = time.monotonic()
            subprocess.run(['cp', '-a', '--sparse=always', snap_dir, dest], check=True)
            cp_times.append(time.monotonic() - start)
            shutil.rmtree(dest)
            if reflink:
                settle()
                start = time.monotonic()
                subprocess.run(['cp', '-a', '--sparse=always', '--reflink=never', snap_dir, dest], check=True)
                full_times.append(time.monotonic() - start)
                shutil.rmtree(dest)
        clone_ms, cp_ms, files_ms = median_ms(clone_times), median_ms(cp_times), median_ms(files_times)
        ratio = clone_ms / cp_ms
        target = 0.1 if reflink else 0.6
        print(machine())
        fstype = subprocess.run(['stat', '-f', '-c', '%T', work], capture_output=True, text=True,
                                check=False).stdout.strip()
        print('filesystem of %s: %s, reflink: %s -> target clone/cp <= %.1f'
              % (work, fstype, 'yes' if reflink else 'no', target))
        print('rounds: %d; simulator request validation off for the bench (see the docstring)' % rounds)
        print('clone (files + new VMM + vm.restore): median %.1f ms  (min %.1f, max %.1f)'
              % (clone_ms, min(clone_times) * 1000, max(clone_times) * 1000))
        print('  of which the files (hard link + disk copy, fsynced): median %.1f ms' % files_ms)
        print('cp -a --sparse=always:                  median %.1f ms  (min %.1f, max %.1f)'
              % (cp_ms, min(cp_times) * 1000, max(cp_times) * 1000))
        print('ratio clone/cp: %.3f  files-only/cp: %.3f  -> %s (target <= %.1f)'
              % (ratio, files_ms / cp_ms, 'MET' if ratio <= target else 'NOT MET', target))
        if full_times:
            full_ms = median_ms(full_times)
            print('cp -a --sparse=always --reflink=never: median %.1f ms  (min %.1f, max %.1f)'
                  % (full_ms, min(full_times) * 1000, max(full_times) * 1000))
            print('ratio clone/full copy: %.3f  files-only/full copy: %.3f  -> %s (target <= %.1f)'
                  % (clone_ms / full_ms, files_ms / full_ms, 'MET' if clone_ms / full_ms <= target else 'NOT MET',
                     target))
        linked_ms = median_ms(linked_times)
        print('linked clone (clone_from.disks=overlay): median %.1f ms  (min %.1f, max %.1f)'
              % (linked_ms, min(linked_times) * 1000, max(linked_times) * 1000))
        print('ratio linked clone/cp: %.3f  -> %s (target <= %.1f)'
              % (linked_ms / cp_ms, 'MET' if linked_ms / cp_ms <= target else 'NOT MET', target))
        if full_times:
            print('ratio linked clone/full copy: %.3f' % (linked_ms / median_ms(full_times)))
        spread = (statistics.pstdev(clone_times) * 1000, statistics.pstdev(cp_times) * 1000)
        print('stdev clone %.1f ms, cp %.1f ms' % spread)
    finally:
        try:
            VmEngine(params(base, name='src', purge=True, force=True)).converge('absent')
        except Exception as exc:  # pylint: disable=broad-except
            print('cleanup: %s' % exc)
        for directory in (work, run_dir, bin_dir):
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == '__main__':
    main()
