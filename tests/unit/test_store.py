"""store.ensure_dir: many runs create the same state_dir at once (ten new VMs in parallel)."""
import os
import stat
import threading

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils import store


def test_ensure_dir_creates_private_dirs(tmp_path):
    path = str(tmp_path / 'a' / 'b')
    assert store.ensure_dir(path) == path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700


def test_ensure_dir_lost_race_is_not_an_error(tmp_path, monkeypatch):
    """Another run creates the directory between our isdir() and makedirs(): the old code raised
    'File exists' and the whole task failed (seen in CI with ten concurrent runs)."""
    path = str(tmp_path / 'state')
    real_makedirs = os.makedirs

    def other_run_wins(name, mode=0o777, exist_ok=False):
        real_makedirs(name, 0o700)          # the other run
        return real_makedirs(name, mode, exist_ok)
    monkeypatch.setattr(store.os, 'makedirs', other_run_wins)
    assert store.ensure_dir(path) == path
    assert os.path.isdir(path)


def test_ensure_dir_path_is_a_file(tmp_path):
    path = tmp_path / 'state'
    path.write_text('not a directory')
    with pytest.raises(OSError):
        store.ensure_dir(str(path))


def test_ensure_dir_many_threads(tmp_path):
    path = str(tmp_path / 'x' / 'y' / 'z')
    errors = []

    def make():
        try:
            store.ensure_dir(path)
        except Exception as exc:   # noqa: BLE001 - collected and asserted below
            errors.append(exc)
    threads = [threading.Thread(target=make) for unused in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and os.path.isdir(path)
