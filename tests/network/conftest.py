"""Fixtures for ch_network tests: namespaces that are always removed (even on failure), the
three-namespace topology and the engine runner (helpers in netutil.py)."""
import pytest

from tests.network.netutil import Engine, Namespaces, Topology


@pytest.fixture
def namespaces():
    spaces = Namespaces()
    try:
        yield spaces
    finally:
        spaces.cleanup()


@pytest.fixture
def netns(namespaces):
    """One empty namespace (lo up)."""
    return namespaces.new('h')


@pytest.fixture
def topo(namespaces):
    return Topology(namespaces)


@pytest.fixture
def engine_factory(tmp_path):
    def make(netns, **kwargs):
        return Engine(tmp_path, netns, **kwargs)
    return make
