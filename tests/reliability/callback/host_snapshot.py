# Test-only callback: records a snapshot of the host (files under the test's directories, network
# links and addresses, the nftables ruleset, processes naming the directories) before and after
# every task, so a table of failing tasks can prove that each of them changed nothing.
# Configured by the environment:
#   CLOUDHV_SNAPSHOT_FILE  JSON-lines output, one {"task", "before", "after"} per task result
#   CLOUDHV_SNAPSHOT_DIRS  the directories to watch, separated by os.pathsep
# The snapshot is taken by the controller, which runs on the target itself (connection local),
# inside the network namespace the test runs ansible-playbook in.
# tests/reliability imports take() from here too, so both sides compare the same view.
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = '''
name: host_snapshot
type: aggregate
short_description: snapshot the host before and after each task (tests only)
description: Writes the host's files, links, addresses, nftables ruleset and processes before and after each task.
requirements: [enable in configuration]
'''

import json
import os
import stat
import subprocess

from ansible.plugins.callback import CallbackBase

# link attributes that describe configuration (counters and carrier timing are left out)
LINK_KEYS = ('ifname', 'ifindex', 'flags', 'mtu', 'master', 'address', 'link_type', 'qdisc')


def _files(dirs):
    out = {}
    for top in dirs:
        if not os.path.lexists(top):
            out[top] = None
            continue
        for root, subdirs, names in os.walk(top):
            for path in [root] + [os.path.join(root, n) for n in subdirs + names]:
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                entry = {'kind': stat.S_IFMT(st.st_mode), 'mode': oct(stat.S_IMODE(st.st_mode)),
                         'uid': st.st_uid, 'mtime_ns': st.st_mtime_ns}
                if not stat.S_ISDIR(st.st_mode):
                    entry['size'] = st.st_size
                out[path] = entry
    return out


def _json_cmd(argv):
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {'error': str(exc)}
    if proc.returncode != 0:
        return {'error': proc.stderr.strip()}
    try:
        return json.loads(proc.stdout or 'null')
    except ValueError:
        return {'error': 'not JSON: %s' % proc.stdout[:200]}


def _links():
    links = _json_cmd(['ip', '-j', 'link', 'show'])
    if not isinstance(links, list):
        return links
    return sorted((dict((k, link.get(k)) for k in LINK_KEYS) for link in links), key=lambda l: l['ifindex'])


def _addresses():
    out = _json_cmd(['ip', '-j', 'addr', 'show'])
    if not isinstance(out, list):
        return out
    return dict((i['ifname'], sorted('%s/%s' % (a.get('local'), a.get('prefixlen')) for a in i.get('addr_info', [])))
                for i in out)


def _ruleset():
    out = _json_cmd(['nft', '-j', 'list', 'ruleset'])
    if isinstance(out, dict) and 'nftables' in out:
        return [item for item in out['nftables'] if 'metainfo' not in item]
    return out


def _processes(dirs):
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as handle:
                argv = handle.read().decode('utf-8', 'replace').split('\0')
        except (IOError, OSError):
            continue
        text = ' '.join(argv).strip()
        if any(d in text for d in dirs):
            found.append('%s %s' % (entry, text))
    return sorted(found)


def take(dirs):
    """The host as far as a test can see it (in the caller's network namespace)."""
    dirs = [d for d in dirs if d]
    return {'files': _files(dirs), 'links': _links(), 'addresses': _addresses(), 'nft': _ruleset(),
            'processes': _processes(dirs)}


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'host_snapshot'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self.path = os.environ.get('CLOUDHV_SNAPSHOT_FILE')
        self.dirs = [d for d in os.environ.get('CLOUDHV_SNAPSHOT_DIRS', '').split(os.pathsep) if d]
        self.last = None

    def v2_playbook_on_task_start(self, task, is_conditional):
        # Only the first task needs a snapshot of its own: nothing runs on the host between two
        # tasks, so each task's "before" is the previous task's "after".
        if self.path and self.last is None:
            self.last = take(self.dirs)

    def _record(self, result):
        if not self.path:
            return
        after = take(self.dirs)
        entry = {'task': result._task.get_name(), 'before': self.last, 'after': after}
        self.last = after
        with open(self.path, 'a') as handle:
            handle.write(json.dumps(entry) + '\n')

    def v2_runner_on_ok(self, result):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result)
