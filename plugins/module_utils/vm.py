# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``Vm`` handle: one VM on this host, whatever wants it.

It knows where the VM lives (layout, record, run files), its VMM (start, stop, restore into a new
one), its taps, and what is there now (``observe``). It decides nothing: ch_vm's converger
(vm_engine.py), the snapshot operations, clones, standby, ch_vm_info and the benches all drive
a VM through this handle, and none of them reaches into another's internals.

No Ansible imports here. Writers hold the VM's lock (store.VmLock).
"""

from __future__ import annotations

import os

from ansible_collections.cloudhv.ch.plugins.module_utils import dhcp
from ansible_collections.cloudhv.ch.plugins.module_utils import spec as specmod
from ansible_collections.cloudhv.ch.plugins.module_utils import vm_record
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import (
    ChApiError,
    CloudHVError,
    VmmNotReachable,
)
from ansible_collections.cloudhv.ch.plugins.module_utils.store import Layout, check_name
from ansible_collections.cloudhv.ch.plugins.module_utils.vmm import Vmm

LIVE_STATES = {'Running': 'running', 'Paused': 'paused'}


def public_spec(spec):
    """The user-visible spec for diffs and ch_vm_info: no None values; cloud-init only as a digest."""
    return dict((k, v) for k, v in (spec or {}).items() if v is not None and v != [] and v != {})


class Observed:
    """What is on the host now for one VM."""

    def __init__(self, record, pid, info, state):
        self.record = record
        self.pid = pid
        self.info = info          # vm.info of a live VMM, or None
        self.state = state        # absent | stopped | crashed | created | running | paused | standby

    @property
    def live(self):
        return self.state in ('running', 'paused')

    @property
    def spec(self):
        return vm_record.spec(self.record)

    def predicted(self, state, config=None, record=None):
        """The observation a step would leave (check mode's view of a repair, clone or wake-up)."""
        info = dict(self.info or {})
        if config is not None:
            info['config'] = config
        info['state'] = state.capitalize()
        return Observed(self.record if record is None else record, self.pid, info, state)


class Vm:
    """One VM on this host. ``binary`` is the CH binary new VMMs run."""

    def __init__(self, layout, name, binary, api_timeout=30.0, launcher='auto', host=None):
        self.layout = layout
        self.name = check_name(name)
        self.binary = binary
        self.api_timeout = api_timeout or 30.0
        self.host = host or specmod.host_id()
        self.vm_dir = layout.vm_dir(self.name)
        self.vmm = Vmm(binary, layout.socket_path(self.name), layout.pid_path(self.name),
                       layout.log_path(self.name), api_timeout=self.api_timeout, launcher=launcher or 'auto',
                       state_dir=layout.state_dir)
        self._netlink = None

    @classmethod
    def of(cls, state_dir, run_dir, name, binary, **kwargs):
        return cls(Layout(state_dir, run_dir), name, binary, **kwargs)

    def sibling(self, name, binary=None):
        """A handle on another VM of the same state_dir (a clone's source)."""
        return Vm(self.layout, name, binary or self.binary, api_timeout=self.api_timeout, host=self.host)

    # -- paths --------------------------------------------------------------------------------
    def cidata_path(self):
        return os.path.join(self.vm_dir, 'cidata.iso')

    def managed_list_path(self):
        return os.path.join(self.vm_dir, 'managed.json')

    def console_sockets(self):
        return [os.path.join(self.layout.run_dir, '%s.%s.sock' % (self.name, kind)) for kind in ('serial', 'console')]

    def build_config(self, spec):
        """The VmConfig CH gets for ``spec`` (a normalized spec)."""
        serial_sock, console_sock = self.console_sockets()
        return specmod.build_config(spec, self.layout.serial_path(self.name), serial_sock, console_sock,
                                    self.cidata_path() if spec.get('cloud_init') else None)

    # -- the record ---------------------------------------------------------------------------
    def record(self):
        return self.layout.read_record(self.name)

    def write_record(self, record):
        self.layout.write_record(self.name, record)

    # -- observation --------------------------------------------------------------------------
    def observe(self, record=None, use_recorded_launcher=False):
        """What is there now. ``record`` saves a second read when the caller has just read it."""
        if record is None:
            record = self.record()
        if use_recorded_launcher and vm_record.launcher(record):
            self.vmm.launcher = vm_record.launcher(record)   # restart the VMM the recorded way
        pid = self.vmm.pid()
        if pid is not None:
            info = None
            try:
                info = self.vmm.client().info()
            except ChApiError as exc:
                if exc.status != 404:
                    raise
            except VmmNotReachable:
                info = None
            if info is None:
                return Observed(record, pid, None, 'created' if record else 'absent')
            return Observed(record, pid, info, LIVE_STATES.get(info.get('state'), 'created'))
        if record is None:
            return Observed(None, None, None, 'absent')
        if vm_record.run_state(record) in ('running', 'paused'):
            # a guest that powered itself off ends its VMM cleanly: stopped, not crashed
            return Observed(record, None, None, 'stopped' if self.vmm.exited_on_its_own() else 'crashed')
        if vm_record.run_state(record) == 'standby':
            from ansible_collections.cloudhv.ch.plugins.module_utils.snapshot_store import standby_manifest
            if standby_manifest(self.layout, self.name):
                return Observed(record, None, None, 'standby')
        return Observed(record, None, None, 'stopped')

    def live_state(self):
        """CH's 'Running', 'Paused', ... for this VM, or None (no VMM, or no VM in it)."""
        if self.vmm.pid() is None:
            return None
        try:
            return (self.vmm.client().info() or {}).get('state')
        except (ChApiError, VmmNotReachable):
            return None

    def client(self):
        return self.vmm.client()

    # -- taps -----------------------------------------------------------------------------------
    def netlink(self):
        if self._netlink is None:
            from ansible_collections.cloudhv.ch.plugins.module_utils.netlink import Netlink
            self._netlink = Netlink().__enter__()
        return self._netlink

    @staticmethod
    def managed_taps(spec):
        return [n['tap'] for n in (spec or {}).get('networks') or [] if n.get('managed_tap')]

    def present_taps(self, names):
        """The taps of ``names`` that exist now, sorted."""
        return [t for t in sorted(set(names)) if self.netlink().link(t) is not None] if names else []

    def ensure_tap(self, net):
        if net and net.get('managed_tap'):
            self.netlink().ensure_tap(net['tap'], net['bridge'], multi_queue=specmod.multi_queue(net),
                                      mtu=net.get('mtu'))

    def ensure_taps(self, spec):
        for net in (spec or {}).get('networks') or []:
            self.ensure_tap(net)

    def remove_taps(self, names):
        for tap in names:
            self.netlink().delete_link(tap)

    # -- the VMM ------------------------------------------------------------------------------
    def launch(self):
        """Start a bare VMM for this VM; its pid."""
        return self.vmm.launch(start_timeout=max(10.0, float(self.api_timeout)))

    def start(self, spec, config, paused=False):
        """Taps, a new VMM, vm.create and vm.boot (and vm.pause). Nothing is left on failure."""
        self.layout.ensure_dirs(self.name)
        self.ensure_taps(spec)
        try:
            self.launch()
            client = self.client()
            client.create(config)
            client.boot()
            if paused:
                client.pause()
        except CloudHVError:
            self.teardown(spec)
            raise

    def restore(self, path, spec, memory_restore_mode='copy', prefault=False, resume=True):
        """Taps, a new VMM, and vm.restore from the snapshot directory ``path``. On failure the
        VMM is stopped and the taps removed, and the error raised."""
        from ansible_collections.cloudhv.ch.plugins.module_utils.restore_options import MEMORY_RESTORE_MODES
        try:
            self.ensure_taps(spec)
            self.launch()
            self.client().restore(path, memory_restore_mode=MEMORY_RESTORE_MODES[memory_restore_mode],
                                  prefault=bool(prefault), resume=resume)
        except CloudHVError:
            self.teardown(spec)
            raise

    def stop(self, spec, timeout=30.0, force=False):
        """The stop ladder, then the VM's taps that remain."""
        self.vmm.stop(timeout=timeout, force=force)
        self.remove_taps(self.present_taps(self.managed_taps(spec)))

    def teardown(self, spec):
        """Kill the VMM at once and remove the taps: the way out of a start or restore that failed."""
        try:
            self.vmm.stop(timeout=0, force=True)
        finally:
            self.remove_taps(self.present_taps(self.managed_taps(spec)))

    def hot_add_net(self, cfg, net):
        self.ensure_tap(net)
        self.client().add_net(cfg)

    def hot_remove(self, dev_id, tap=None):
        self.client().remove_device(dev_id)
        if tap and tap.startswith(specmod.TAP_PREFIX):
            self.netlink().delete_link(tap)

    def close(self):
        if self._netlink is not None:
            self._netlink.__exit__(None, None, None)
            self._netlink = None
        self.vmm.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the result -----------------------------------------------------------------------------
    def result(self, state, record, info=None, pid=None):
        """ch_vm's ``vm`` result."""
        record = record or {}
        spec = record.get('spec') or {}
        config = (info or {}).get('config') or record.get('config')
        console_pty = None
        if info and isinstance(info.get('config'), dict):
            for key in ('console', 'serial'):
                dev = info['config'].get(key) or {}
                if dev.get('mode') == 'Pty' and dev.get('file'):
                    console_pty = dev['file']
                    break
        return {
            'name': self.name,
            'state': state,
            'pid': pid,
            'api_socket': self.vmm.socket_path if pid else None,
            'config': record.get('config'),
            'live_config': (info or {}).get('config'),
            'memory_actual_size': (info or {}).get('memory_actual_size'),
            'serial_file': (config or {}).get('serial', {}).get('file') if spec.get('serial') == 'file' else None,
            'console_pty': console_pty,
            'log_file': self.layout.log_path(self.name),
            'networks': [self._nic_result(n) for n in spec.get('networks') or []],
            'disks': [{'id': d['id'], 'path': d['path'], 'managed': d['path'] in record.get('managed_files', [])}
                      for d in spec.get('disks') or []],
        }

    def _nic_result(self, net):
        address, source = dhcp.nic_address(self.layout, net)
        return {'id': net['id'], 'tap': net['tap'], 'mac': net['mac'], 'bridge': net['bridge'],
                'address': address, 'address_source': source}
