"""ch_vms's validation pass (issue 15): what validating every item first costs, in-process, against
the alternative of running every item's converge in check mode first. 30 VMs on the simulator;
CPU of this process only (the VMMs are separate processes), per VM, median of 5 passes:

- argspec validation: ArgumentSpecValidator with ch_vm's options (what ch_vms does per item);
- validate_vm: module_utils/vm_engine.validate_vm (the engine's pre-lock checks, no API request);
- converge_vm check mode: the whole check-mode run (one GET vm.info per VM, like the real run);
- converge_vm no-change: the real no-change run, for scale.
Run: .venv/bin/python bench/fleet_validation.py   (seconds)
"""
import os
import shutil
import statistics
import sys
import tempfile
import time

from common import setup_paths, simulator
from harness import kill_pids_under, no_validation_spec

VMS = 30


def main():
    setup_paths()
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
    from ansible_collections.cloudhv.ch.plugins.module_utils import vm_engine
    from ansible_collections.cloudhv.ch.plugins.modules.ch_vms import item_spec
    work = tempfile.mkdtemp(prefix='chb-validation-')
    try:
        binary = simulator(work)
        kernel = os.path.join(work, 'vmlinux')
        with open(kernel, 'wb') as handle:
            handle.write(b'\x7fELF stand-in kernel')
        os.environ['CHSIM_SPEC'] = no_validation_spec(work)
        validator = ArgumentSpecValidator(item_spec())

        def params(name, **extra):
            out = validator.validate(dict({'name': name, 'kernel': kernel}, **extra)).validated_parameters
            out.update(binary=binary, api_timeout=30.0, state_dir=os.path.join(work, 's'), run_dir=os.path.join(work, 'r'))
            return out

        names = ['v%02d' % i for i in range(VMS)]
        for name in names:
            vm_engine.converge_vm(params(name))

        def cpu(func):
            start = time.process_time()
            func()
            return (time.process_time() - start) * 1000.0 / len(names)

        rows = (('argspec validation', lambda: [validator.validate({'name': n, 'kernel': kernel}) for n in names]),
                ('validate_vm', lambda: [vm_engine.validate_vm(params(n)) for n in names]),
                ('converge_vm check mode', lambda: [vm_engine.converge_vm(params(n), check_mode=True) for n in names]),
                ('converge_vm no-change', lambda: [vm_engine.converge_vm(params(n)) for n in names]))
        for label, func in rows:
            print('%-24s %6.2f ms CPU per VM (median of 5 passes over %d VMs)'
                  % (label, statistics.median(cpu(func) for _pass in range(5)), VMS))
        for name in names:
            vm_engine.converge_vm(params(name, state='absent', purge=True))
    finally:
        kill_pids_under(work)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
