"""The test command runs pytest with `-n 2 --dist loadgroup`, and the real_ch suite relies on
`@pytest.mark.xdist_group` to keep its steps on one worker, in order. Some pytest/pytest-xdist
pairs silently ignore the mark (pytest 9.2 with xdist 3.8: pytest-dev/pytest-xdist#1386), which
nothing else would notice: this runs a small grouped suite and checks it stayed on one worker."""
import os
import subprocess
import sys

import pytest

SUITE = '''
import os
import pytest

@pytest.mark.xdist_group('together')
@pytest.mark.parametrize('i', range(6))
def test_grouped(i):
    with open(os.environ['WORKERS_SEEN'], 'a') as handle:
        handle.write(os.environ.get('PYTEST_XDIST_WORKER', 'none') + '\\n')
'''


def test_loadgroup_keeps_a_group_on_one_worker(tmp_path):
    pytest.importorskip('xdist')
    (tmp_path / 'test_grouped.py').write_text(SUITE)
    seen = tmp_path / 'workers'
    env = dict(os.environ, WORKERS_SEEN=str(seen))
    res = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-n', '2', '--dist', 'loadgroup', '-p', 'no:cacheprovider',
                          '-c', os.devnull, '--rootdir', str(tmp_path), str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=120, cwd=str(tmp_path), check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    workers = seen.read_text().split()
    assert len(workers) == 6 and len(set(workers)) == 1, (
        'xdist_group was ignored (tests of one group ran on %s): this pytest/pytest-xdist pair does not '
        'honour --dist loadgroup; pin them in requirements-dev.txt' % sorted(set(workers)))
