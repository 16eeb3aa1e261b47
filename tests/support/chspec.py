"""CH's OpenAPI specs are not in the repository: they live in the project's shared notes,
``shared/ch-api/`` above the checkout (``../shared`` beside it), where the simulator finds them too
(tests/simulator/chsim.py, find_spec: upward from its own directory; the tests use that).

A plain clone has none. There the tests that need a spec are skipped, naming the missing file, and
the simulator runs with request body validation off (the first line of its log says so). Where the
spec must be there, with ``CI=true`` or when ``../shared`` exists, a missing or unreadable spec
fails the test instead: CI never skips them silently.
"""
import os

import pytest
import yaml

from tests.simulator.chsim import find_spec

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(os.path.abspath(__file__)))))
V53 = 'cloud-hypervisor-v53.0.yaml'


def find(name):
    """shared/ch-api/<name> in the closest directory above the repository that has it, or None:
    where the simulator looks (CHSIM_SPEC aside, which only the simulator reads)."""
    return find_spec(name, env=False)


def required():
    """Must the specs be there? In CI (CI=true) and in the project's own layout (../shared)."""
    return os.environ.get('CI') == 'true' or os.path.isdir(os.path.join(os.path.dirname(REPO), 'shared'))


def schemas(name=V53):
    """The spec's components.schemas; skips the test without the spec (fails it where required)."""
    path = find(name)
    try:
        if path is None:
            raise OSError('shared/ch-api/%s not found above %s' % (name, REPO))
        with open(path) as handle:
            out = yaml.safe_load(handle)['components']['schemas']
        if not isinstance(out, dict):
            raise ValueError('%s has no components.schemas mapping' % path)
        return out
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        problem = 'CH OpenAPI spec unavailable: %s' % exc
    if required():
        pytest.fail('%s (CI=true or ../shared exists, so it must be there)' % problem, pytrace=False)
    pytest.skip('%s: a plain clone does not check request bodies against the spec' % problem)
