"""store.ensure_dir: many runs create the same state_dir at once (ten new VMs in parallel)."""
import os
import stat
import threading

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils import store, vm_record


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


@pytest.mark.parametrize('text,problem', [
    ('{"record_version": 1, "spec": {', 'is not valid JSON'),
    ('[1, 2]', 'is not a JSON object'),
    ('{"record_version": 2}', 'record_version 2'),
    ('{"record_version": "1"}', "record_version '1'"),
])
def test_unusable_record_names_the_problem_and_the_way_out(tmp_path, text, problem):
    from ansible_collections.cloudhv.ch.plugins.module_utils.errors import RecordUnreadable
    layout = store.Layout(str(tmp_path / 's'), str(tmp_path / 'r'))
    os.makedirs(layout.vm_dir('web1'))
    with open(layout.record_path('web1'), 'w') as handle:
        handle.write(text)
    with pytest.raises(RecordUnreadable) as info:
        layout.read_record('web1')
    assert problem in info.value.msg and problem in info.value.details['problem']
    assert 'cloudhv.ch.ch_vm name=web1 state=absent force=true' in info.value.msg
    assert layout.list_vms() == ['web1']


def test_current_and_older_records_are_read(tmp_path):
    layout = store.Layout(str(tmp_path / 's'), str(tmp_path / 'r'))
    os.makedirs(layout.vm_dir('web1'))
    layout.write_record('web1', {'spec': {}})
    assert layout.read_record('web1')['record_version'] == vm_record.RECORD_VERSION
    with open(layout.record_path('web1'), 'w') as handle:
        handle.write('{"spec": {}}')          # the first records had no record_version
    # read in the current shape: vm_record.upgrade stamps the version (the file is left as it is)
    assert layout.read_record('web1') == {'spec': {}, 'record_version': vm_record.RECORD_VERSION}
    with open(layout.record_path('web1')) as handle:
        assert handle.read() == '{"spec": {}}'
    assert layout.read_record('web2') is None
