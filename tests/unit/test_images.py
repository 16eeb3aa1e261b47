# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for module_utils/images.py, against real files, a real qemu-img and a real
(small) tmpfs for the out-of-space case."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils import images, spec
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import (
    CloudHVError,
    HostError,
    MissingDependency,
    OptionError,
)

MIB = 1 << 20
QEMU_IMG = shutil.which('qemu-img')
QEMU_IO = shutil.which('qemu-io')
needs_qemu_img = pytest.mark.skipif(QEMU_IMG is None, reason='qemu-img not installed')


def _write_at(path, offset, data):
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def _sparse_file(path, size, chunks):
    """A file of ``size`` bytes that is a hole except for ``chunks`` [(offset, bytes)]."""
    with open(str(path), 'wb') as handle:
        handle.truncate(size)
    for offset, data in chunks:
        _write_at(path, offset, data)


def _sha(path):
    sha = hashlib.sha256()
    with open(str(path), 'rb') as handle:
        for block in iter(lambda: handle.read(MIB), b''):
            sha.update(block)
    return sha.hexdigest()


def _entries(directory):
    return sorted(os.listdir(str(directory)))


def _info(path):
    out = subprocess.check_output([QEMU_IMG, 'info', '-U', '--output=json', str(path)])
    return json.loads(out)


def _reflink_works(directory):
    """Probe the filesystem directly (independently of images.py)."""
    a = tempfile.NamedTemporaryFile(dir=str(directory))
    b = tempfile.NamedTemporaryFile(dir=str(directory))
    try:
        a.write(b'x' * 4096)
        a.flush()
        fcntl.ioctl(b.fileno(), 0x40049409, a.fileno())
        return True
    except OSError:
        return False
    finally:
        a.close()
        b.close()


# --- detect_image_type / sniff ---------------------------------------------------------------

@pytest.mark.parametrize('path,expected', [
    ('/x/disk.qcow2', 'qcow2'),
    ('/x/DISK.QCOW2', 'qcow2'),
    ('/x/disk.vhdx', 'vhdx'),
    ('/x/disk.vhd', 'fixedvhd'),
    ('/x/disk.raw', 'raw'),
    ('/x/disk.img', 'raw'),
    ('/x/disk.iso', 'raw'),
    ('/x/disk', 'raw'),
    ('/x/disk.qcow2.bak', 'raw'),
    ('/x.qcow2/disk', 'raw'),
])
def test_detect_image_type(path, expected):
    assert spec.detect_image_type(path) == expected
    assert spec.CH_IMAGE_TYPES[expected] in ('Raw', 'Qcow2', 'Vhdx', 'FixedVhd')


@needs_qemu_img
def test_sniff_image_type(tmp_path):
    for fmt, ext, expected in (('qcow2', 'img', 'qcow2'), ('vhdx', 'vhdx', 'vhdx'),
                               ('raw', 'raw', None)):
        path = str(tmp_path / ('d.%s' % ext))
        subprocess.check_call([QEMU_IMG, 'create', '-q', '-f', fmt, path, '1M'])
        assert spec.sniff_image_type(path) == expected
    fixed = str(tmp_path / 'f.vhd')
    subprocess.check_call([QEMU_IMG, 'create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', fixed, '1M'])
    assert spec.sniff_image_type(fixed) == 'fixedvhd'
    dynamic = str(tmp_path / 'd.vhd')
    subprocess.check_call([QEMU_IMG, 'create', '-q', '-f', 'vpc', dynamic, '1M'])
    assert spec.sniff_image_type(dynamic) == 'dynamicvhd'
    assert spec.sniff_image_type(str(tmp_path / 'missing')) is None


# --- create_raw --------------------------------------------------------------------------

def test_create_raw_is_sparse_exact_and_private(tmp_path):
    path = tmp_path / 'disk.raw'
    images.create_raw(str(path), 8 << 30, option='disks[1].size')
    st = os.stat(str(path))
    assert st.st_size == 8 << 30
    assert st.st_blocks * 512 <= 64 * 1024  # nothing written
    assert st.st_mode & 0o777 == 0o600
    assert _entries(tmp_path) == ['disk.raw']
    with open(str(path), 'rb') as handle:
        handle.seek((8 << 30) - 512)
        assert handle.read() == b'\0' * 512


@pytest.mark.parametrize('size', [0, -512, 1000, 513, (1 << 30) + 1, '1G', 1.5, True, None])
def test_create_raw_bad_size(tmp_path, size):
    with pytest.raises(OptionError) as info:
        images.create_raw(str(tmp_path / 'disk.raw'), size, option='disks[1].size')
    assert info.value.option == 'disks[1].size'
    assert _entries(tmp_path) == []


def test_create_raw_never_replaces_existing_disk(tmp_path):
    path = tmp_path / 'disk.raw'
    path.write_bytes(b'precious')
    with pytest.raises(HostError) as info:
        images.create_raw(str(path), MIB)
    assert 'refusing' in str(info.value)
    assert path.read_bytes() == b'precious'
    assert _entries(tmp_path) == ['disk.raw']
    images.create_raw(str(path), MIB, overwrite=True)
    assert os.path.getsize(str(path)) == MIB


def test_create_raw_missing_directory(tmp_path):
    with pytest.raises(HostError):
        images.create_raw(str(tmp_path / 'no' / 'disk.raw'), MIB)


# --- create_overlay ------------------------------------------------------------------------

@pytest.fixture
def raw_base(tmp_path):
    base = tmp_path / 'base.raw'
    _sparse_file(base, 4 * MIB, [(0, b'\x5a' * 65536), (3 * MIB, b'\x77' * 4096)])
    return base


@needs_qemu_img
def test_create_overlay_on_raw_base(tmp_path, raw_base):
    overlay = tmp_path / 'vm' / 'root.qcow2'
    overlay.parent.mkdir()
    images.create_overlay(str(overlay), str(raw_base))
    info = _info(overlay)
    assert info['format'] == 'qcow2'
    assert info['backing-filename'] == str(raw_base)
    assert info['backing-filename-format'] == 'raw'
    assert info['virtual-size'] == 4 * MIB
    assert os.stat(str(overlay)).st_mode & 0o777 == 0o600
    assert _entries(overlay.parent) == ['root.qcow2']


@needs_qemu_img
@pytest.mark.skipif(QEMU_IO is None, reason='qemu-io not installed')
def test_writing_overlay_leaves_base_alone(tmp_path, raw_base):
    overlay = tmp_path / 'root.qcow2'
    images.create_overlay(str(overlay), str(raw_base))
    before = _sha(raw_base)
    # base data visible through the overlay
    subprocess.check_call([QEMU_IO, '-f', 'qcow2', '-c', 'read -P 0x5a 0 64k',
                           '-c', 'read -P 0x77 3M 4k', str(overlay)], stdout=subprocess.DEVNULL)
    subprocess.check_call([QEMU_IO, '-f', 'qcow2', '-c', 'write -P 0xab 0 64k', str(overlay)],
                          stdout=subprocess.DEVNULL)
    out = subprocess.run([QEMU_IO, '-f', 'qcow2', '-c', 'read -P 0xab 0 64k', str(overlay)],
                         stdout=subprocess.PIPE, check=False).stdout
    assert b'Pattern verification failed' not in out
    assert _sha(raw_base) == before


@needs_qemu_img
def test_overlay_on_qcow2_base_relative_path_and_size(tmp_path, monkeypatch):
    base = tmp_path / 'jammy.img'  # Ubuntu names its qcow2 cloud images .img
    subprocess.check_call([QEMU_IMG, 'create', '-q', '-f', 'qcow2', str(base), '2M'])
    monkeypatch.chdir(str(tmp_path))
    images.create_overlay('big.qcow2', 'jammy.img', size_bytes=16 * MIB)
    info = _info(tmp_path / 'big.qcow2')
    assert info['backing-filename'] == str(base)  # absolute, whatever the cwd was
    assert info['backing-filename-format'] == 'qcow2'
    assert info['virtual-size'] == 16 * MIB


@needs_qemu_img
def test_overlay_smaller_than_base_refused(tmp_path, raw_base):
    with pytest.raises(OptionError) as info:
        images.create_overlay(str(tmp_path / 'o.qcow2'), str(raw_base), size_bytes=MIB,
                              size_option='disks[3].size')
    assert info.value.option == 'disks[3].size'
    with pytest.raises(OptionError):
        images.create_overlay(str(tmp_path / 'o.qcow2'), str(raw_base), size_bytes=5 * MIB + 1)
    assert _entries(tmp_path) == ['base.raw']


def test_overlay_missing_base_names_option(tmp_path):
    with pytest.raises(OptionError) as info:
        images.create_overlay(str(tmp_path / 'o.qcow2'), str(tmp_path / 'nope.raw'),
                              option='disks[2].backing_file')
    assert info.value.option == 'disks[2].backing_file'
    assert 'does not exist' in str(info.value)
    with pytest.raises(OptionError):
        images.create_overlay(str(tmp_path / 'o.qcow2'), str(tmp_path))  # a directory
    assert _entries(tmp_path) == []


@needs_qemu_img
def test_overlay_unsupported_backing_format(tmp_path):
    base = tmp_path / 'base.vhdx'
    subprocess.check_call([QEMU_IMG, 'create', '-q', '-f', 'vhdx', str(base), '1M'])
    with pytest.raises(OptionError) as info:
        images.create_overlay(str(tmp_path / 'o.qcow2'), str(base))
    assert 'vhdx' in str(info.value)
    assert _entries(tmp_path) == ['base.vhdx']


def test_overlay_without_qemu_img(tmp_path, raw_base, monkeypatch):
    monkeypatch.setattr(images.shutil, 'which', lambda name: None)
    with pytest.raises(MissingDependency) as info:
        images.create_overlay(str(tmp_path / 'o.qcow2'), str(raw_base))
    assert info.value.library == 'qemu-img'
    assert _entries(tmp_path) == ['base.raw']


@needs_qemu_img
def test_overlay_never_replaces_existing_file(tmp_path, raw_base):
    overlay = tmp_path / 'o.qcow2'
    overlay.write_bytes(b'precious')
    with pytest.raises(HostError):
        images.create_overlay(str(overlay), str(raw_base))
    assert overlay.read_bytes() == b'precious'
    assert _entries(tmp_path) == ['base.raw', 'o.qcow2']


@needs_qemu_img
def test_overlay_forced_backing_format_is_checked(tmp_path, raw_base):
    with pytest.raises(OptionError) as info:
        images.create_overlay(str(tmp_path / 'o.qcow2'), str(raw_base), backing_format='qcow2',
                              option='disks[0].backing_file')
    assert info.value.option == 'disks[0].backing_file'
    assert _entries(tmp_path) == ['base.raw']


@needs_qemu_img
def test_overlay_qemu_img_create_failure_cleans_up(tmp_path, raw_base, monkeypatch):
    real = images._run_qemu_img

    def failing_create(args):
        if args[0] == 'create':
            real(args)  # let it really write the temp file first
            return 1, '', 'simulated failure'
        return real(args)

    monkeypatch.setattr(images, '_run_qemu_img', failing_create)
    with pytest.raises(HostError) as info:
        images.create_overlay(str(tmp_path / 'o.qcow2'), str(raw_base))
    assert 'simulated failure' in str(info.value)
    assert _entries(tmp_path) == ['base.raw']


@needs_qemu_img
def test_qemu_img_info(raw_base):
    info = images.qemu_img_info(str(raw_base))
    assert info['format'] == 'raw' and info['virtual-size'] == 4 * MIB
    with pytest.raises(HostError):
        images.qemu_img_info(str(raw_base) + '.missing')


# --- copy_file -----------------------------------------------------------------------------

@pytest.fixture
def sparse_src(tmp_path):
    """64 MiB apparent, ~2.1 MiB of data in three extents (one larger than a copy chunk)."""
    src = tmp_path / 'src.raw'
    _sparse_file(src, 64 * MIB, [
        (0, os.urandom(4096)),
        (10 * MIB, os.urandom(2 * MIB + 12345)),
        (64 * MIB - 100, b'tail' * 25),
    ])
    os.chmod(str(src), 0o640)
    return src


def _assert_same_sparse_copy(src, dst):
    s, d = os.stat(str(src)), os.stat(str(dst))
    assert d.st_size == s.st_size
    assert _sha(dst) == _sha(src)
    # holes kept: allocation about that of the source, far below the apparent size
    assert d.st_blocks <= s.st_blocks + 64
    assert d.st_blocks * 512 < s.st_size // 8
    assert d.st_mode & 0o7777 == s.st_mode & 0o7777


def test_copy_file_default_path_matches_filesystem(tmp_path, sparse_src):
    dst = tmp_path / 'dst.raw'
    method = images.copy_file(str(sparse_src), str(dst))
    assert method == ('reflink' if _reflink_works(tmp_path) else 'sparse')
    _assert_same_sparse_copy(sparse_src, dst)
    assert _entries(tmp_path) == ['dst.raw', 'src.raw']


def test_copy_file_tries_ficlone_then_sparse_copy(tmp_path, sparse_src, monkeypatch):
    calls = []

    def fake_ioctl(fd, request, arg):
        calls.append((request, arg))
        raise OSError(errno.EOPNOTSUPP, 'Operation not supported')

    monkeypatch.setattr(images.fcntl, 'ioctl', fake_ioctl)
    dst = tmp_path / 'dst.raw'
    assert images.copy_file(str(sparse_src), str(dst)) == 'sparse'
    assert len(calls) == 1 and calls[0][0] == 0x40049409
    _assert_same_sparse_copy(sparse_src, dst)


@pytest.mark.parametrize('err', [errno.EXDEV, errno.EINVAL, errno.ENOTTY])
def test_other_no_reflink_errors_fall_back(tmp_path, sparse_src, monkeypatch, err):
    def fake_ioctl(fd, request, arg):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(images.fcntl, 'ioctl', fake_ioctl)
    assert images.copy_file(str(sparse_src), str(tmp_path / 'dst.raw')) == 'sparse'


def test_reflink_success_is_reported(tmp_path, monkeypatch):
    """When FICLONE succeeds nothing else is copied: the ioctl did the work."""
    src = tmp_path / 'src'
    src.write_bytes(b'abc')

    def fake_clone(fd, request, arg):
        os.pwrite(fd, os.pread(arg, 100, 0), 0)

    monkeypatch.setattr(images.fcntl, 'ioctl', fake_clone)
    monkeypatch.setattr(images, '_sparse_copy', lambda *a: pytest.fail('copied after reflink'))
    assert images.copy_file(str(src), str(tmp_path / 'dst')) == 'reflink'
    assert (tmp_path / 'dst').read_bytes() == b'abc'


def _raise_eopnotsupp(*_args):
    raise OSError(errno.EOPNOTSUPP, 'Operation not supported')


def test_copy_without_copy_file_range(tmp_path, sparse_src, monkeypatch):
    def refuse(*_args):
        raise OSError(errno.EXDEV, 'Invalid cross-device link')

    monkeypatch.setattr(images.fcntl, 'ioctl', _raise_eopnotsupp)
    monkeypatch.setattr(images.os, 'copy_file_range', refuse)
    dst = tmp_path / 'dst.raw'
    assert images.copy_file(str(sparse_src), str(dst)) == 'sparse'
    _assert_same_sparse_copy(sparse_src, dst)


def test_copy_empty_and_all_hole_files(tmp_path):
    empty = tmp_path / 'empty'
    empty.write_bytes(b'')
    images.copy_file(str(empty), str(tmp_path / 'empty2'))
    assert (tmp_path / 'empty2').read_bytes() == b''
    hole = tmp_path / 'hole'
    _sparse_file(hole, 8 * MIB, [])
    images.copy_file(str(hole), str(tmp_path / 'hole2'))
    st = os.stat(str(tmp_path / 'hole2'))
    assert st.st_size == 8 * MIB and st.st_blocks == 0


def test_copy_file_overwrite_semantics(tmp_path):
    src = tmp_path / 'src'
    src.write_bytes(b'new')
    dst = tmp_path / 'dst'
    dst.write_bytes(b'old')
    with pytest.raises(HostError):
        images.copy_file(str(src), str(dst), overwrite=False)
    assert dst.read_bytes() == b'old'
    images.copy_file(str(src), str(dst))
    assert dst.read_bytes() == b'new'
    assert _entries(tmp_path) == ['dst', 'src']


def test_copy_file_unexpected_ioctl_error_propagates(tmp_path, sparse_src, monkeypatch):
    def fake_ioctl(fd, request, arg):
        raise OSError(errno.EIO, 'Input/output error')

    monkeypatch.setattr(images.fcntl, 'ioctl', fake_ioctl)
    with pytest.raises(HostError) as info:
        images.copy_file(str(sparse_src), str(tmp_path / 'dst.raw'))
    assert 'Input/output error' in str(info.value)
    assert _entries(tmp_path) == ['src.raw']


def test_copy_file_bad_source(tmp_path):
    with pytest.raises(HostError):
        images.copy_file(str(tmp_path / 'missing'), str(tmp_path / 'dst'))
    with pytest.raises(CloudHVError):
        images.copy_file(str(tmp_path), str(tmp_path / 'dst'))
    assert _entries(tmp_path) == []


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / 'small'
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(mnt)],
            stderr=subprocess.PIPE, check=False).returncode != 0:
        pytest.skip('cannot mount a tmpfs here (needs root)')
    try:
        yield mnt
    finally:
        subprocess.run(['umount', str(mnt)], check=False)


def test_copy_file_enospc(tmp_path, small_tmpfs):
    src = tmp_path / 'big.raw'
    _sparse_file(src, 4 * MIB, [(0, os.urandom(2 * MIB))])
    with pytest.raises(HostError) as info:
        images.copy_file(str(src), str(small_tmpfs / 'big.raw'))
    assert 'no space left' in str(info.value)
    assert _entries(small_tmpfs) == []


def test_create_raw_larger_than_the_filesystem(small_tmpfs):
    """Proof that nothing is written: 1 GiB on a 1 MiB filesystem."""
    images.create_raw(str(small_tmpfs / 'disk.raw'), 1 << 30)
    assert os.path.getsize(str(small_tmpfs / 'disk.raw')) == 1 << 30


def _mkfs_tool():
    for tool, args in (('mkfs.btrfs', ['-q']), ('mkfs.xfs', ['-q', '-m', 'reflink=1'])):
        if shutil.which(tool):
            return tool, args
    return None, None


@pytest.mark.skipif(_mkfs_tool()[0] is None or os.geteuid() != 0,
                    reason='neither mkfs.btrfs nor mkfs.xfs installed (or not root)')
def test_copy_file_reflinks_on_cow_filesystem(tmp_path):
    tool, args = _mkfs_tool()
    image = tmp_path / 'fs.img'
    _sparse_file(image, 320 * MIB, [])
    subprocess.check_call([tool] + args + [str(image)])
    mnt = tmp_path / 'mnt'
    mnt.mkdir()
    if subprocess.run(['mount', '-o', 'loop', str(image), str(mnt)], check=False).returncode != 0:
        pytest.skip('loop mount failed')
    try:
        src = mnt / 'src.raw'
        _sparse_file(src, 16 * MIB, [(MIB, os.urandom(MIB))])
        os.sync()
        assert images.copy_file(str(src), str(mnt / 'dst.raw')) == 'reflink'
        assert _sha(mnt / 'dst.raw') == _sha(src)
        assert _entries(mnt) == ['dst.raw', 'src.raw']
    finally:
        subprocess.run(['umount', str(mnt)], check=False)


# --- copy_tree / disk_usage ---------------------------------------------------------------

@pytest.fixture
def snapshot_dir(tmp_path):
    snap = tmp_path / 'snap'
    snap.mkdir()
    (snap / 'config.json').write_text(u'{"cpus": {}}')
    (snap / 'state.json').write_text(u'{"state": 1}')
    _sparse_file(snap / 'memory-ranges', 32 * MIB, [(MIB, os.urandom(8192))])
    (snap / 'sub').mkdir()
    (snap / 'sub' / 'ignored').write_text(u'x')
    os.symlink('config.json', str(snap / 'link'))
    return snap


def test_copy_tree_hardlinks_listed_files(tmp_path, snapshot_dir):
    dst = tmp_path / 'clone'
    result = images.copy_tree(str(snapshot_dir), str(dst), hardlink=('memory-ranges',))
    assert set(result) == {'config.json', 'state.json', 'memory-ranges'}
    assert result['memory-ranges'] == 'hardlink'
    assert result['config.json'] in ('reflink', 'sparse')
    assert _entries(dst) == ['config.json', 'memory-ranges', 'state.json']
    src_mem, dst_mem = os.stat(str(snapshot_dir / 'memory-ranges')), os.stat(str(dst / 'memory-ranges'))
    assert dst_mem.st_ino == src_mem.st_ino and dst_mem.st_nlink == 2
    for name in ('config.json', 'state.json'):
        assert os.stat(str(dst / name)).st_ino != os.stat(str(snapshot_dir / name)).st_ino
        assert (dst / name).read_bytes() == (snapshot_dir / name).read_bytes()
    assert not any(n.endswith('.tmp') for n in os.listdir(str(tmp_path)))


def test_copy_tree_without_hardlinks_copies_everything(tmp_path, snapshot_dir):
    dst = tmp_path / 'copy'
    result = images.copy_tree(str(snapshot_dir), str(dst))
    assert 'hardlink' not in result.values()
    assert os.stat(str(dst / 'memory-ranges')).st_ino != \
        os.stat(str(snapshot_dir / 'memory-ranges')).st_ino
    _assert_same_sparse_copy(snapshot_dir / 'memory-ranges', dst / 'memory-ranges')


def test_copy_tree_destination_rules(tmp_path, snapshot_dir):
    empty = tmp_path / 'empty'
    empty.mkdir()
    images.copy_tree(str(snapshot_dir), str(empty))
    assert 'config.json' in _entries(empty)
    with pytest.raises(HostError):
        images.copy_tree(str(snapshot_dir), str(empty))  # not empty any more
    with pytest.raises(HostError):
        images.copy_tree(str(tmp_path / 'missing'), str(tmp_path / 'x'))


def test_copy_tree_failure_leaves_nothing(tmp_path, snapshot_dir, monkeypatch):
    real = images.copy_file

    def fail_on_state(src, dst, overwrite=True):
        if src.endswith('state.json'):
            raise HostError('boom')
        return real(src, dst, overwrite)

    monkeypatch.setattr(images, 'copy_file', fail_on_state)
    before = _entries(tmp_path)
    with pytest.raises(HostError):
        images.copy_tree(str(snapshot_dir), str(tmp_path / 'clone'), hardlink=('memory-ranges',))
    assert _entries(tmp_path) == before
    assert os.stat(str(snapshot_dir / 'memory-ranges')).st_nlink == 1


def test_disk_usage(tmp_path, snapshot_dir):
    mem = snapshot_dir / 'memory-ranges'
    st = os.stat(str(mem))
    assert images.disk_usage(str(mem)) == st.st_blocks * 512
    assert images.disk_usage(str(mem)) < 1 * MIB < st.st_size
    expected = sum(os.lstat(os.path.join(root, name)).st_blocks * 512
                   for root, _d, files in os.walk(str(snapshot_dir)) for name in files)
    assert images.disk_usage(str(snapshot_dir)) == expected
    # a hard link inside the tree is counted once
    os.link(str(mem), str(snapshot_dir / 'sub' / 'mem-link'))
    assert images.disk_usage(str(snapshot_dir)) == expected
    assert images.disk_usage(str(tmp_path / 'missing')) == 0
