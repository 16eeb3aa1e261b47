"""Shared helpers for the benchmarks: machine description, medians, the simulator launcher."""
import os
import platform
import statistics
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, 'build', 'collections')


def setup_paths():
    link = os.path.join(COLLECTIONS, 'ansible_collections', 'cloudhv', 'ch')
    if not os.path.exists(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(REPO, link)
    for path in (COLLECTIONS, os.path.join(REPO, 'tests', 'simulator')):
        if path not in sys.path:
            sys.path.insert(0, path)


def machine():
    cpu = 'unknown CPU'
    try:
        with open('/proc/cpuinfo') as handle:
            for line in handle:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return '%s, %d CPUs, %s, Python %s' % (
        cpu, os.cpu_count() or 0, platform.platform(), platform.python_version())


def median_ms(samples):
    return statistics.median(samples) * 1000.0


def simulator(directory=None):
    setup_paths()
    from install import install_launcher
    directory = directory or tempfile.mkdtemp(prefix='cloudhv-bench-')
    path = os.path.join(directory, 'cloud-hypervisor')
    install_launcher(path)
    return path
