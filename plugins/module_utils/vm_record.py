# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A VM's record: the one place that knows its shape.

The record is ``<state_dir>/vms/<name>/vm.json``, a JSON object written by ch_vm (and by ch_snapshot's
restore, clone, fork and standby) through :meth:`store.Layout.write_record` and read through
:meth:`store.Layout.read_record`, which run :func:`stamp` and :func:`upgrade` of this module. Snapshot
manifests carry a copy of the record as it was when the snapshot was taken (``manifest['record']``).

Keys (all optional on read: the accessors below give a default for a missing key):

``record_version``
    int, :data:`RECORD_VERSION`. Stamped on every write. A record without it is of version 1 (every
    release so far has written 1); a record of a higher version was written by a newer release and is
    refused (RecordUnreadable), as is a version that is not an integer.
``name``
    str, the VM's name (the name of the record's directory). Stamped on every write.
``spec``
    dict, the VM's normalized desired spec (``spec.normalize``): ``cpus``, ``max_cpus``, ``memory``,
    ``memory_hotplug`` (bytes), ``hugepages``, ``shared_memory``, ``balloon``, ``payload``
    (``{firmware}`` or ``{kernel, cmdline, initramfs}``), ``disks``, ``networks``, ``serial``, ``console``,
    ``vsock``, ``devices``, ``platform``, ``extra_config``, and ``cloud_init`` (``{digest, instance_id,
    hostname}`` of the rendered NoCloud image, or None).

    ``spec['networks']``: one dict per NIC, in order: ``id`` (``net<N>``), ``bridge`` (or None),
    ``user_tap`` (the tap the user named, or None), ``tap`` (the tap CH opens), ``managed_tap`` (True when
    the collection generated the tap for a bridge: it creates and removes it, and ch_network counts it
    as the VM's), ``mac``, ``ip``, ``mask``, ``mtu``, ``num_queues``, ``rate_limit``, and ``address``
    (only when a static DHCP address was asked for).

    ``spec['disks']``: one dict per disk: ``id``, ``path``, ``readonly``, ``direct``, ``image_type``,
    ``image_type_explicit``, ``serial``, ``size`` (bytes, for a disk the collection creates),
    ``backing_file``, ``rate_limit``.
``config``
    dict, the VmConfig last sent (or to be sent) to Cloud Hypervisor (``spec.build_config``).
``binary``
    str, the Cloud Hypervisor binary the VM was last converged with.
``launcher``
    str, how the VMM is started, kept only when it is not the default (``auto``/``direct``), so records
    written before the option existed do not change; ch_snapshot restarts the VMM the same way.
``run_state``
    str, the state the VM was last converged to: ``running``, ``paused``, ``stopped`` or ``standby``
    (memory snapshotted under ``<vm_dir>/standby``, VMM stopped). A record that says running or paused
    without a live VMM is a crashed (or stopped-by-itself) VM.
``ram_ceiling``
    int, bytes: the RAM the running VMM can grow to (its boot RAM plus ``memory_hotplug``), recorded when
    a run boots the VMM. Missing in records written before live RAM growth was bounded.
``managed_files``
    [str], the files the collection created for the VM (disks, cloud-init image): state=absent
    purge=true removes them, and disks listed here are reported as ``managed``.
``cloned_from``
    dict, only for a VM made by ``clone_from``: ``vm``, ``snapshot``, ``path`` (the snapshot cloned),
    ``fork`` (bool, True for a fork of a running VM).

No Ansible imports here.
"""


import copy

from ansible_collections.cloudhv.ch.plugins.module_utils.errors import RecordUnreadable

RECORD_VERSION = 1

RUN_STATES = ('running', 'paused', 'stopped', 'standby')

# the expected JSON type of each top-level key (None is allowed for all of them)
_TYPES = {
    'name': str, 'spec': dict, 'config': dict, 'binary': str, 'launcher': str, 'run_state': str,
    'ram_ceiling': int, 'managed_files': list, 'cloned_from': dict,
}
_SPEC_LISTS = ('networks', 'disks')


# -- constructing -------------------------------------------------------------------------------
def nic(tap, bridge=None, net_id='net0', mac=None, managed_tap=None, **extra):
    """One entry of ``spec['networks']``. ``managed_tap`` defaults to True for a bridge NIC (the
    collection made the tap), as ``spec.normalize_networks`` sets it; ``extra`` adds keys
    (``address``, ``mtu``, ...)."""
    entry = {'bridge': bridge, 'user_tap': None if bridge else tap, 'tap': tap,
             'managed_tap': bool(bridge) if managed_tap is None else bool(managed_tap),
             'mac': mac, 'ip': None, 'mask': None, 'mtu': None, 'num_queues': None, 'id': net_id,
             'rate_limit': None}
    entry.update(extra)
    return entry


def build(spec=None, networks=None, disks=None, config=None, binary=None, run_state=None,
          managed_files=None, launcher=None, ram_ceiling=None, cloned_from=None, name=None):
    """A record of the current shape. ``networks`` and ``disks`` (lists of dicts, see :func:`nic`)
    go into ``spec``; keys that are only present sometimes (``launcher``, ``ram_ceiling``,
    ``cloned_from``, ``name``, ``run_state``) are left out when None, as ch_vm leaves them out."""
    spec = copy.deepcopy(spec) if spec else {}
    if networks is not None:
        spec['networks'] = list(networks)
    if disks is not None:
        spec['disks'] = list(disks)
    spec.setdefault('networks', [])
    spec.setdefault('disks', [])
    record = {'record_version': RECORD_VERSION, 'spec': spec, 'config': config,
              'binary': binary, 'managed_files': list(managed_files or [])}
    for key, value in (('name', name), ('run_state', run_state), ('launcher', launcher),
                       ('ram_ceiling', ram_ceiling), ('cloned_from', cloned_from)):
        if value is not None:
            record[key] = value
    return record


def stamp(record, name):
    """A copy of ``record`` as it is written: this release's version and the VM's name."""
    record = dict(record)
    record['record_version'] = RECORD_VERSION
    record['name'] = name
    return record


# -- reading ------------------------------------------------------------------------------------
def unreadable(problem, name, path):
    """RecordUnreadable: the problem, then the way out."""
    return RecordUnreadable("%s. Restore the record from a backup, or remove the VM with cloudhv.ch.ch_vm "
                            "name=%s state=absent force=true (stops its VMM, removes its taps, run files and "
                            "record; keeps its disks)" % (problem, name), path=path, problem=problem)


def upgrade(record, name=None, path=None):
    """The record in the current shape, or None for None; RecordUnreadable when it cannot be used.

    Every release so far has written ``record_version`` 1 in today's shape (keys added since, such
    as ``ram_ceiling`` and ``launcher``, are optional), so a record without ``record_version`` is one
    of version 1 and only gets the version stamped. A version that is not an integer, or one above
    :data:`RECORD_VERSION` (a newer release wrote it), is refused, as is a record whose keys do not
    have their JSON types (edited by hand). A later version's upgrade steps go here."""
    if record is None:
        return None
    path = path or 'of VM %s' % name
    if not isinstance(record, dict):
        raise unreadable("record %s is not a JSON object" % path, name, path)
    version = record.get('record_version', RECORD_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version > RECORD_VERSION:
        raise unreadable("record %s has record_version %r; this release of cloudhv.ch reads version %d: "
                         "it was written by a newer release" % (path, version, RECORD_VERSION), name, path)
    for key, kind in sorted(_TYPES.items()):
        value = record.get(key)
        if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise unreadable("record %s: %s is %r, not a JSON %s" % (path, key, value, _json_type(kind)), name, path)
    for key in _SPEC_LISTS:
        value = (record.get('spec') or {}).get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
            raise unreadable("record %s: spec.%s is %r, not a list of JSON objects" % (path, key, value), name, path)
    record = dict(record)
    record['record_version'] = RECORD_VERSION
    return record


def _json_type(kind):
    return {str: 'string', dict: 'object', list: 'array', int: 'integer'}[kind]


# -- accessors (a missing key gives the default; the record may be None) -------------------------
def spec(record):
    return (record or {}).get('spec') or {}


def networks(record):
    """The NICs of the record's spec (see :func:`nic`)."""
    return spec(record).get('networks') or []


def disks(record):
    return spec(record).get('disks') or []


def managed_taps(record):
    """The tap names the VM owns: those of its NICs whose tap the collection made (``managed_tap``)."""
    return [net['tap'] for net in networks(record) if net.get('managed_tap') and net.get('tap')]


def config(record):
    return (record or {}).get('config')


def binary(record):
    return (record or {}).get('binary')


def launcher(record):
    """The recorded launcher, None for the default."""
    return (record or {}).get('launcher')


def run_state(record):
    return (record or {}).get('run_state')


def ram_ceiling(record):
    return (record or {}).get('ram_ceiling')


def managed_files(record):
    return list((record or {}).get('managed_files') or [])


def cloned_from(record):
    return (record or {}).get('cloned_from')


def version(record):
    return (record or {}).get('record_version', RECORD_VERSION)
