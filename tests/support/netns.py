"""A throwaway network namespace for tests that make bridges, taps or listeners.

    with throwaway_netns('chvrole') as name:
        subprocess.run(['ip', 'netns', 'exec', name, ...])

The namespace gets a unique name and its loopback up; on the way out every process still in it is
killed and the namespace is deleted.
"""
import contextlib
import os
import signal
import subprocess
import uuid


@contextlib.contextmanager
def throwaway_netns(prefix):
    name = '%s-%s' % (prefix, uuid.uuid4().hex[:8])
    subprocess.run(['ip', 'netns', 'add', name], check=True)
    try:
        subprocess.run(['ip', '-n', name, 'link', 'set', 'lo', 'up'], check=True)
        yield name
    finally:
        remove_netns(name)


def remove_netns(name):
    """Kill every process still in the namespace, then delete it."""
    pids = subprocess.run(['ip', 'netns', 'pids', name], capture_output=True, text=True, timeout=20,
                          check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    subprocess.run(['ip', 'netns', 'del', name], capture_output=True, timeout=20, check=False)
