"""A no-change ch_vm run on a running VM with a disk and a bridge NIC (with and without cloud-init)
imports neither pyroute2 nor the images engine (nor pycdlib, which only builds the seed image):
the bridge is checked in sysfs and the disk's header with a small read (bench/noop.py measures what that saves). The run is ch_vm's own action,
in a fresh interpreter inside the test's network namespace."""
import json
import os
import subprocess
import sys

import pytest

from tests.integration.test_ch_vm import vm_args
from tests.support.ansible import REPO

SCRIPT = r'''
import json, sys
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible_collections.cloudhv.ch.plugins.modules import ch_vm


class Module(object):
    check_mode = False
    _diff = False

    def __init__(self, params):
        self.params = params

    def warn(self, text):
        pass


checked = ArgumentSpecValidator(ch_vm.argument_spec()).validate(json.loads(sys.argv[1]))
assert not checked.error_messages, checked.error_messages
result = ch_vm.action(Module(checked.validated_parameters))
print(json.dumps({'changed': result['changed'], 'changes': result['changes'],
                  'modules': sorted(m for m in sys.modules if m.startswith(('pyroute2', 'pycdlib')) or m.startswith(
                      'ansible_collections.cloudhv.ch.plugins.module_utils.'))}))
'''
ENGINE = 'ansible_collections.cloudhv.ch.plugins.module_utils.'


def noop_run(hv, args):
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, 'build', 'collections'))
    out = subprocess.run(['ip', 'netns', 'exec', hv.netns, sys.executable, '-c', SCRIPT,
                          json.dumps(dict(hv.defaults, **args))],
                         capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('cloud_init', [False, True])
def test_no_change_run_with_disk_and_bridge_imports_neither_pyroute2_nor_images(hv_ns, cloud_init):
    hv = hv_ns
    args = vm_args(hv, disks=[{'path': str(hv.tmp_path / 'root.raw'), 'size': '16M'}],
                   networks=[{'bridge': 'br0'}])
    if cloud_init:
        args['cloud_init'] = {'user_data': {'packages': ['nginx']}}
    first = hv.vm(**args)
    assert first['_rc'] == 0 and first['changed'], first

    run = noop_run(hv, args)
    assert run['changed'] is False, run['changes']
    assert ENGINE + "vm_engine" in run['modules']           # the engine did run
    assert not [m for m in run['modules'] if m.startswith('pyroute2')], run['modules']
    assert not [m for m in run['modules'] if m.startswith('pycdlib')], run['modules']   # only builds the image
    assert ENGINE + 'images' not in run['modules'] and ENGINE + 'netlink' not in run['modules'], run['modules']
    # nor the snapshot, clone and standby engines
    assert not [m for m in ('clone', 'snapshot_ops', 'snapshot_engine', 'snapshot_store', 'standby', 'vm_executor')
                if ENGINE + m in run['modules']], run['modules']

    # a link that is not a bridge is still refused, by name (netlink confirms what sysfs does not show)
    subprocess.run(['ip', '-n', hv.netns, 'link', 'add', 'br1', 'type', 'veth', 'peer', 'name', 'br1p'], check=True)
    res = hv.vm(**dict(args, networks=[{'bridge': 'br1'}]))
    assert res['_rc'] != 0 and 'networks[0].bridge: bridge br1 does not exist' in res['msg'], res
