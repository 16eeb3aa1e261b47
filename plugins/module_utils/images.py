# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disk image files: create raw disks and qcow2 overlays, copy images cheaply, measure usage.

Every file is created next to its final name under a temporary name, fsynced and then renamed
(or hard-linked, when an existing file must not be replaced), so a crash or a full disk never
leaves a half-written image under the real name, and a failure removes its temporary file.

Copies try a reflink first (FICLONE: instant, shares extents on btrfs, XFS with reflink=1,
bcachefs, ...); elsewhere they copy only the data extents (SEEK_DATA/SEEK_HOLE), so sparse
images stay sparse.

qcow2 overlays are made with ``qemu-img`` (package qemu-utils), the one external tool used here.

No Ansible imports here.
"""


import errno
import fcntl
import json
import os
import shutil
import stat
import subprocess
import tempfile

from ansible_collections.cloudhv.ch.plugins.module_utils.errors import (
    CloudHVError,
    HostError,
    MissingDependency,
    OptionError,
)
from ansible_collections.cloudhv.ch.plugins.module_utils.fsutil import fsync_dir, unlink_quiet

# Sizes of raw images must be whole 512-byte sectors: CH's virtio-block device exposes
# size // 512 sectors and only warns that the remainder "will not be visible to the guest".
# We refuse such sizes instead of silently losing the tail.
SECTOR_SIZE = 512
IMAGE_MODE = 0o600
# _IOW(0x94, 9, int): ioctl(dest_fd, FICLONE, src_fd)
FICLONE = 0x40049409
# FICLONE errors meaning "no reflink here" (not "something is wrong"): copy the data instead.
_NO_REFLINK = frozenset(e for e in (errno.EOPNOTSUPP, getattr(errno, 'ENOTSUP', errno.EOPNOTSUPP),
                                    errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.ENOSYS))
# copy_file_range errors meaning "not possible between these files": use read/write.
_NO_COPY_FILE_RANGE = frozenset(e for e in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP,
                                            getattr(errno, 'ENOTSUP', errno.EOPNOTSUPP),
                                            errno.EINVAL, errno.EBADF, errno.EPERM))
# os.link errors meaning "this filesystem does not do hard links".
_NO_HARDLINK = frozenset((errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP))
CHUNK = 1 << 20
CFR_CHUNK = 1 << 30


def _discard(tmp):
    """Drop a temporary file on the way out of a failed write; never masks that failure."""
    try:
        unlink_quiet(tmp)
    except OSError:
        pass


# Formats CH's qcow2 driver follows as a backing file (qemu-img's names).
BACKING_FORMATS = ('qcow2', 'raw')


def _mkstemp_next_to(path):
    """(fd, temp path) in the directory of ``path``, named ``.<name>.XXXX.tmp``."""
    return tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), suffix='.tmp',
                            dir=os.path.dirname(path))


def _publish(tmp, path, overwrite):
    """Move the finished temp file to ``path``. With ``overwrite=False`` an existing ``path``
    is never replaced: link(2) fails atomically with EEXIST."""
    if overwrite:
        os.rename(tmp, path)
    else:
        try:
            os.link(tmp, path)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                raise HostError("refusing to replace the existing file %s" % path, path=path)
            if exc.errno not in _NO_HARDLINK:
                raise
            if os.path.lexists(path):
                raise HostError("refusing to replace the existing file %s" % path, path=path)
            os.rename(tmp, path)
        else:
            os.unlink(tmp)
    fsync_dir(os.path.dirname(path))


def _refuse_existing(path, overwrite):
    # Early and cheap; _publish re-checks atomically at the end.
    if not overwrite and os.path.lexists(path):
        raise HostError("refusing to replace the existing file %s" % path, path=path)


def _host_error(action, path, exc, **details):
    if getattr(exc, 'errno', None) == errno.ENOSPC:
        return HostError("%s %s: no space left on the filesystem of %s"
                         % (action, path, os.path.dirname(path)), path=path, **details)
    return HostError("%s %s: %s" % (action, path, getattr(exc, 'strerror', None) or exc),
                     path=path, **details)


def _check_size(size_bytes, option, minimum=1):
    if isinstance(size_bytes, bool) or not isinstance(size_bytes, int):
        raise OptionError(option, "must be an integer number of bytes, not %s"
                          % type(size_bytes).__name__)
    if size_bytes < minimum:
        if minimum == 1:
            raise OptionError(option, "must be positive (got %d)" % size_bytes)
        raise OptionError(option, "must be at least %d bytes (got %d)" % (minimum, size_bytes))
    if size_bytes % SECTOR_SIZE:
        raise OptionError(option, "must be a multiple of %d bytes (got %d); Cloud Hypervisor "
                                  "would hide the last %d bytes from the guest"
                          % (SECTOR_SIZE, size_bytes, size_bytes % SECTOR_SIZE))


def create_raw(path, size_bytes, option='disks[].size', overwrite=False):
    """Create a sparse raw image of ``size_bytes`` (a positive multiple of 512) at ``path``,
    mode 0600. Nothing is written: the file is all hole. An existing file is left alone and
    reported as HostError unless ``overwrite``."""
    _check_size(size_bytes, option)
    path = os.path.abspath(path)
    _refuse_existing(path, overwrite)
    tmp = None
    try:
        fd, tmp = _mkstemp_next_to(path)
        try:
            os.fchmod(fd, IMAGE_MODE)
            os.ftruncate(fd, size_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
        _publish(tmp, path, overwrite)
        tmp = None
    except (OSError, IOError) as exc:
        raise _host_error("cannot create the disk image", path, exc)
    finally:
        _discard(tmp)


def _qemu_img():
    binary = shutil.which('qemu-img')
    if binary is None:
        raise MissingDependency('qemu-img', reason='to create qcow2 overlay disks (install the '
                                                   'qemu-utils or qemu-img package)')
    return binary


def _run_qemu_img(args):
    binary = _qemu_img()
    env = dict(os.environ, LC_ALL='C')
    try:
        proc = subprocess.run([binary] + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env, check=False)
    except OSError as exc:
        raise MissingDependency('qemu-img', reason='to handle disk images (%s)' % exc)
    return proc.returncode, proc.stdout.decode('utf-8', 'replace'), \
        proc.stderr.decode('utf-8', 'replace').strip()


def qemu_img_info(path, image_format=None):
    """``qemu-img info --output=json`` of ``path`` as a dict (``format``, ``virtual-size``,
    ``backing-filename``, ...). Uses ``-U`` so images open in a running VM can be inspected."""
    args = ['info', '-U', '--output=json']
    if image_format:
        args += ['-f', image_format]
    args.append(os.path.abspath(path))
    code, out, err = _run_qemu_img(args)
    if code != 0:
        raise HostError("qemu-img info failed for %s: %s" % (path, err or 'exit %d' % code),
                        path=path)
    try:
        return json.loads(out)
    except ValueError:
        raise HostError("qemu-img info returned no JSON for %s" % path, path=path)


def create_overlay(path, backing_file, option='disks[0].backing_file', size_bytes=None,
                   size_option='disks[0].size', backing_format=None, overwrite=False):
    """Create a qcow2 image at ``path`` whose backing file is ``backing_file`` (stored as an
    absolute path, with its format recorded via ``-F``, as CH requires).

    The backing format is ``backing_format`` if given, else what ``qemu-img info`` says about
    the base. ``size_bytes`` (optional) grows the virtual disk beyond the base's size. The base
    is only read. Mode 0600; an existing ``path`` is left alone (HostError) unless ``overwrite``.
    Note that CH only follows the backing file when the disk has ``backing_files: true``.
    """
    if not isinstance(backing_file, str) or not backing_file:
        raise OptionError(option, "must be a path to an existing disk image")
    path = os.path.abspath(path)
    base = os.path.abspath(backing_file)
    if not os.path.exists(base):
        raise OptionError(option, "the backing file %s does not exist" % base)
    if not os.path.isfile(base):
        raise OptionError(option, "the backing file %s is not a regular file" % base)
    if os.path.exists(path) and os.path.samefile(path, base):
        raise OptionError(option, "the backing file cannot be the overlay itself (%s)" % path)
    try:
        info = qemu_img_info(base, backing_format)
    except HostError as exc:
        raise OptionError(option, "cannot use %s as a backing file: %s" % (base, exc.msg))
    fmt = backing_format or info.get('format')
    if fmt not in BACKING_FORMATS:
        raise OptionError(option, "the backing file %s is in %s format; Cloud Hypervisor only "
                                  "follows qcow2 or raw backing files" % (base, fmt))
    virtual_size = int(info.get('virtual-size') or 0)
    args = ['create', '-q', '-f', 'qcow2', '-F', fmt, '-b', base]
    if size_bytes is not None:
        _check_size(size_bytes, size_option, minimum=max(virtual_size, 1))
    _refuse_existing(path, overwrite)
    tmp = None
    try:
        fd, tmp = _mkstemp_next_to(path)
        os.close(fd)
        args.append(tmp)
        if size_bytes is not None:
            args.append(str(size_bytes))
        code, _out, err = _run_qemu_img(args)
        if code != 0:
            raise HostError("qemu-img create failed for %s: %s" % (path, err or 'exit %d' % code),
                            path=path)
        os.chmod(tmp, IMAGE_MODE)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _publish(tmp, path, overwrite)
        tmp = None
    except (OSError, IOError) as exc:
        raise _host_error("cannot create the overlay", path, exc)
    finally:
        _discard(tmp)


def _try_reflink(sfd, dfd):
    try:
        fcntl.ioctl(dfd, FICLONE, sfd)
    except (OSError, IOError) as exc:
        if exc.errno in _NO_REFLINK:
            return False
        raise
    return True


def _data_extents(fd, size):
    """Yield (start, end) of the data regions of ``fd`` below ``size``."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole from offset to EOF
                return
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP) and offset == 0:
                yield 0, size  # no SEEK_DATA support: everything is data
                return
            raise
        if start >= size:
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        offset = end


def _copy_range(sfd, dfd, start, end, state):
    pos = start
    while pos < end and state['copy_file_range']:
        try:
            done = os.copy_file_range(sfd, dfd, min(end - pos, CFR_CHUNK), pos, pos)
        except OSError as exc:
            if exc.errno not in _NO_COPY_FILE_RANGE:
                raise
            state['copy_file_range'] = False
            break
        if done == 0:
            # EOF (the source shrank) or a filesystem that silently copies nothing: let
            # read/write decide which.
            state['copy_file_range'] = False
            break
        pos += done
    while pos < end:
        data = os.pread(sfd, min(CHUNK, end - pos), pos)
        if not data:
            return
        view = memoryview(data)
        while view:
            written = os.pwrite(dfd, view, pos)
            view = view[written:]
            pos += written


def _sparse_copy(sfd, dfd, size):
    os.ftruncate(dfd, 0)
    os.ftruncate(dfd, size)
    state = {'copy_file_range': hasattr(os, 'copy_file_range')}
    for start, end in _data_extents(sfd, size):
        _copy_range(sfd, dfd, start, end, state)


def copy_file(src, dst, overwrite=True):
    """Copy the regular file ``src`` to ``dst``; return ``'reflink'`` or ``'sparse'``.

    Tries FICLONE first; where the filesystem cannot (EOPNOTSUPP, EXDEV, EINVAL, ENOTTY) it
    copies only the data extents, with copy_file_range where possible, so holes stay holes.
    The size and permission bits of ``src`` are kept. The copy is written to a temp file next
    to ``dst``, fsynced and renamed over ``dst`` (with ``overwrite=False`` an existing ``dst``
    is refused instead). Errors (ENOSPC included) raise HostError and leave no temp file.
    """
    src = os.path.abspath(src)
    dst = os.path.abspath(dst)
    try:
        sfd = os.open(src, os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
    except OSError as exc:
        raise _host_error("cannot read", src, exc)
    tmp = None
    try:
        st = os.fstat(sfd)
        if not stat.S_ISREG(st.st_mode):
            raise CloudHVError("cannot copy %s: not a regular file" % src, path=src)
        dfd, tmp = _mkstemp_next_to(dst)
        try:
            if _try_reflink(sfd, dfd):
                method = 'reflink'
            else:
                method = 'sparse'
                _sparse_copy(sfd, dfd, st.st_size)
            os.fchmod(dfd, stat.S_IMODE(st.st_mode))
            os.fsync(dfd)
        finally:
            os.close(dfd)
        _publish(tmp, dst, overwrite)
        tmp = None
        return method
    except (OSError, IOError) as exc:
        raise _host_error("cannot copy %s to" % src, dst, exc, src=src)
    finally:
        os.close(sfd)
        _discard(tmp)


def copy_tree(src_dir, dst_dir, hardlink=()):
    """Copy the regular files directly in ``src_dir`` to a new directory ``dst_dir``.

    Files named in ``hardlink`` are hard-linked instead of copied (e.g. a clone's
    ``memory-ranges``, which is only read), falling back to a copy across filesystems.
    Subdirectories, symlinks and other non-regular entries are not copied. The tree is built
    in a temp directory next to ``dst_dir`` and renamed into place at the end, so ``dst_dir``
    appears complete or not at all; ``dst_dir`` must not exist or be empty.
    Returns ``{name: 'reflink'|'sparse'|'hardlink'}``.
    """
    src_dir = os.path.abspath(src_dir)
    dst_dir = os.path.abspath(dst_dir)
    hardlink = frozenset(hardlink or ())
    if not os.path.isdir(src_dir):
        raise HostError("cannot copy %s: not a directory" % src_dir, path=src_dir)
    if os.path.lexists(dst_dir) and (not os.path.isdir(dst_dir) or os.listdir(dst_dir)):
        raise HostError("refusing to copy into %s: it exists and is not an empty directory"
                        % dst_dir, path=dst_dir)
    parent = os.path.dirname(dst_dir)
    tmpdir = None
    try:
        tmpdir = tempfile.mkdtemp(prefix='.%s.' % os.path.basename(dst_dir), suffix='.tmp',
                                  dir=parent)
        os.chmod(tmpdir, stat.S_IMODE(os.stat(src_dir).st_mode))
        result = {}
        for name in sorted(os.listdir(src_dir)):
            source = os.path.join(src_dir, name)
            if not stat.S_ISREG(os.lstat(source).st_mode):
                continue
            target = os.path.join(tmpdir, name)
            if name in hardlink:
                try:
                    os.link(source, target)
                    result[name] = 'hardlink'
                    continue
                except OSError as exc:
                    if exc.errno not in _NO_HARDLINK:
                        raise
            result[name] = copy_file(source, target, overwrite=False)
        fsync_dir(tmpdir)
        os.rename(tmpdir, dst_dir)
        tmpdir = None
        fsync_dir(parent)
        return result
    except (OSError, IOError) as exc:
        raise _host_error("cannot copy %s to" % src_dir, dst_dir, exc, src=src_dir)
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


def disk_usage(path):
    """Bytes actually allocated (st_blocks * 512) for a file, or summed over the files below a
    directory (hard links counted once, symlinks not followed). A missing path counts 0."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return 0
        raise _host_error("cannot stat", path, exc)
    if not stat.S_ISDIR(st.st_mode):
        return st.st_blocks * 512
    total = 0
    seen = set()
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                fst = os.lstat(os.path.join(root, name))
            except OSError:
                continue  # removed while we walked
            key = (fst.st_dev, fst.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += fst.st_blocks * 512
    return total
