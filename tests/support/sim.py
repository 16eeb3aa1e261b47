"""Helpers for driving the CH simulator's knobs from tests."""
import os


def sim_env(**knobs):
    """The current environment plus simulator knobs (CHSIM_IGNORE_ACPI=1, CHSIM_ACPI_DELAY=0.5, ...)."""
    env = dict(os.environ)
    env.update(dict((k, str(v)) for k, v in knobs.items()))
    return env
