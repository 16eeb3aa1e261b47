# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ch_vms: many VMs of one host converged in one module run, several at once.

Plain Python, no Ansible imports. Every VM goes through the single-VM engine
(:func:`vm_engine.converge_vm`, which holds the VM's lock), in worker threads; this file only
validates every item first (:func:`vm_engine.validate_vm`, the engine's own phase 1), schedules
them (a clone after its source, clones one at a time), collects per-VM results and failures, and
lists the VMs to prune.
"""


import threading

from ansible_collections.cloudhv.ch.plugins.module_utils import vm_engine
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import CloudHVError, HostError, OptionError
from ansible_collections.cloudhv.ch.plugins.module_utils.store import Layout

# ch_vm's options that are the host's, not a VM's: one value for the whole ch_vms task
HOST_OPTIONS = ('state_dir', 'run_dir')
# ch_vm's common options an item may set for itself (else it inherits the task's value)
INHERITED = ('binary', 'api_timeout')


class ItemError(OptionError):
    """Bad input in one item of ``vms``: the option is named ``vms[<index>].<option>``."""

    def __init__(self, index, name, exc):
        option = getattr(exc, 'option', None) or exc.details.get('option')
        where = 'vms[%d]' % index + ('.%s' % option if option else '')
        problem = getattr(exc, 'problem', None) or exc.msg
        super(ItemError, self).__init__(where, problem, vm=name)
        self.msg = "%s (VM %s): %s" % (where, name, problem)


def check_list(items):
    """The checks that span items: unique names, no static address given twice on one bridge.
    ``items`` are validated ch_vm parameters."""
    seen = {}
    claims = {}
    for index, params in enumerate(items):
        name = params['name']
        if name in seen:
            raise OptionError('vms[%d].name' % index, "%s is also the name of vms[%d]; names must be unique"
                              % (name, seen[name]))
        seen[name] = index
        if params['state'] == 'absent':
            continue
        for nic, net in enumerate(params.get('networks') or []):
            if net.get('address') and net.get('bridge'):
                key = (net['bridge'], net['address'])
                if key in claims:
                    raise OptionError('vms[%d].networks[%d].address' % (index, nic),
                                      "%s on bridge %s is also vms[%d].networks[%d].address; each VM needs an "
                                      "address of its own" % (net['address'], net['bridge'], claims[key][0],
                                                              claims[key][1]))
                claims[key] = (index, nic)


def clone_source(params, names):
    """The name of the item this item is cloned from (by forking or from its snapshot), or None."""
    source = (params.get('clone_from') or {}).get('vm')
    return source if source in names and source != params['name'] else None


def prune_names(layout, names):
    """The VMs recorded in this state_dir that ``names`` does not declare, sorted."""
    keep = set(names)
    return [vm for vm in layout.list_vms() if vm not in keep]


class Fleet:
    """One ch_vms run. ``items``: validated ch_vm parameters per VM, in order (the pruned VMs
    included, as state=absent items). ``converge`` and ``validate`` are the engine's entry points
    (injectable for tests)."""

    def __init__(self, items, parallel=4, check_mode=False, lock_timeout=60.0,
                 converge=None, validate=None):
        self.items = items
        self.parallel = max(1, int(parallel))
        self.check_mode = check_mode
        self.lock_timeout = lock_timeout
        self._converge = converge or vm_engine.converge_vm
        self._validate = validate or vm_engine.validate_vm
        self.names = [p['name'] for p in items]
        self.results = {}
        self.failed = {}
        self._cond = threading.Condition()
        # Creating a clone picks a free vsock CID by reading the other VMs' records (clone.py):
        # two clones created at once could pick the same one. Clones are created one at a time.
        self._clone_lock = threading.Lock()

    # -- validation -------------------------------------------------------------------------
    def deferred(self, params):
        """A clone of an item that does not exist yet: its engine checks run once the source is there."""
        source = clone_source(params, self.names)
        if source is None:
            return False
        layout = Layout(params['state_dir'], params['run_dir'])
        try:
            return layout.read_record(params['name']) is None
        except CloudHVError:
            return False

    def validate(self):
        """Every item's engine checks, before anything is touched; the first bad item raises ItemError."""
        for index, params in enumerate(self.items):
            if self.deferred(params):
                continue
            try:
                self._validate(params)
            except (OptionError, HostError) as exc:
                raise ItemError(index, params['name'], exc)

    # -- running -------------------------------------------------------------------------------
    def run(self):
        """Converge every item, ``parallel`` at a time; returns (results, failures), each by name."""
        pending = list(range(len(self.items)))
        running = set()
        done = set()

        def ready(index):
            source = clone_source(self.items[index], self.names)
            return source is None or source in done

        def worker():
            while True:
                with self._cond:
                    while True:
                        if not pending:
                            return
                        index = next((i for i in pending if ready(i)), None)
                        if index is not None:
                            pending.remove(index)
                            running.add(index)
                            break
                        if not running:        # only items waiting on failed sources are left
                            index = pending.pop(0)
                            running.add(index)
                            break
                        self._cond.wait()
                try:
                    self._one(index)
                finally:
                    with self._cond:
                        running.discard(index)
                        done.add(self.items[index]['name'])
                        self._cond.notify_all()

        threads = [threading.Thread(target=worker, name='ch_vms-%d' % n)
                   for n in range(min(self.parallel, len(self.items)))]
        if len(threads) == 1:
            worker()          # one at a time: no thread at all
        else:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        return self.results, self.failed

    def _one(self, index):
        params = self.items[index]
        name = params['name']
        source = clone_source(params, self.names)
        try:
            if source is not None and source in self.failed:
                raise CloudHVError("not converged: it is cloned from %s, which failed" % source)
            if source is not None and self.check_mode and self.deferred(params):
                self.results[name] = self._unpredictable(params, source)
                return
            if self.deferred(params):
                try:
                    self._validate(params)
                except (OptionError, HostError) as exc:
                    raise ItemError(index, name, exc)
            if params.get('clone_from') and params['state'] != 'absent':
                with self._clone_lock:
                    result = self._converge(params, check_mode=self.check_mode, lock_timeout=self.lock_timeout)
            else:
                result = self._converge(params, check_mode=self.check_mode, lock_timeout=self.lock_timeout)
            self.results[name] = result
        except CloudHVError as exc:
            self.failed[name] = error_entry(name, exc)
        except Exception as exc:  # pylint: disable=broad-except
            # one VM's unexpected error must not take the other VMs' results with it
            import traceback
            self.failed[name] = {'name': name, 'msg': "Unexpected error: %s: %s" % (type(exc).__name__, exc),
                                 'exception': traceback.format_exc()}

    @staticmethod
    def _unpredictable(params, source):
        """Check mode: a clone of a VM this run would create first cannot be planned yet."""
        return {'changed': True, 'restart_required': False,
                'changes': ['create the VM as a clone of %s, once %s exists (check mode cannot plan it further)'
                            % (source, source)],
                'diff': {'before': {'state': 'absent', 'spec': {}}, 'after': {'state': params['state'], 'spec': {}}},
                'vm': {'name': params['name'], 'state': 'absent'},
                'warnings': ['%s: cloned from %s, which this run creates; check mode cannot predict the clone'
                             % (params['name'], source)]}


def error_entry(name, exc):
    entry = {'name': name, 'msg': exc.msg}
    for key, value in exc.details.items():
        entry.setdefault(key, value)
    return entry


def summarize(items, results, failed, pruned, diff=False):
    """The module result of a run: per-VM results by name, in the items' order."""
    out = {'changed': False, 'vms': {}, 'changes': {}, 'restart_required': [], 'pruned': list(pruned),
           'failed_vms': [], 'warnings': []}
    before, after = {}, {}
    for params in items:
        name = params['name']
        if name in failed:
            out['failed_vms'].append(failed[name])
            continue
        result = results.get(name)
        if result is None:
            continue
        out['vms'][name] = result['vm']
        out['changes'][name] = list(result['changes'])
        if result['changes'] or result.get('changed'):
            out['changed'] = True
        if result.get('restart_required'):
            out['restart_required'].append(name)
        out['warnings'].extend(result.get('warnings') or [])
        if diff:
            before[name] = result['diff']['before']
            after[name] = result['diff']['after']
    if diff:
        out['diff'] = {'before': before, 'after': after}
    return out
