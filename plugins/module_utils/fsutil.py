# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small file-system idioms the engine repeats: quiet removal, fsync of files and directories,
checksums. One helper each. No Ansible imports."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil


def unlink_quiet(path):
    """Remove ``path``; True when it was there. A missing file is fine, any other error raises."""
    if path is None:
        return False
    try:
        os.unlink(path)
        return True
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
        return False


def rmtree_quiet(path):
    """Remove the directory tree ``path`` if there is one; errors inside it are ignored."""
    if path and os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)


def fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory):
    """Make a rename or a new entry in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path):
    sha = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            sha.update(block)
    return sha.hexdigest()
