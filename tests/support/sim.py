"""Helpers for driving the CH simulator's knobs from tests."""
import os


def sim_env(**knobs):
    """The current environment plus simulator knobs (CHSIM_IGNORE_ACPI=1, CHSIM_ACPI_DELAY=0.5, ...)."""
    env = dict(os.environ)
    env.update(dict((k, str(v)) for k, v in knobs.items()))
    return env


def stand_in_payloads(directory):
    """Stand-in payload files in ``directory`` for VMs on the simulator (a kernel starting with the
    ELF magic, a firmware): returns (kernel path, firmware path)."""
    kernel = os.path.join(str(directory), 'vmlinux')
    with open(kernel, 'wb') as handle:
        handle.write(b'\x7fELF fake kernel for the simulator')
    firmware = os.path.join(str(directory), 'hypervisor-fw')
    with open(firmware, 'wb') as handle:
        handle.write(b'fake firmware')
    return kernel, firmware
