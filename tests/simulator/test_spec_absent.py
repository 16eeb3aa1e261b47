"""Without CH's OpenAPI spec (a plain clone has no ../shared), the simulator runs with request
body validation off and says so on the first line of its log; with it, it says nothing of the kind
and validates (test_conformance.py::test_schema_validation)."""
from tests.support import chspec


def first_line(sim):
    return (sim.logtext().splitlines() or [''])[0]


def test_without_the_spec_the_first_line_says_validation_is_off(spawn, workdir):
    missing = '%s/no-such-spec.yaml' % workdir
    sim = spawn(env={'CHSIM_SPEC': missing})
    assert sim.get('vmm.ping').status == 200
    line = first_line(sim)
    assert 'request body validation is OFF' in line and missing in line, sim.logtext()[:2000]
    # and it is the truth: a body the spec refuses goes through
    assert sim.put('vm.create', {'payload': {'kernel': '/x'}, 'frobnicate': True}).status != 400


def test_with_the_spec_nothing_is_said(spawn):
    chspec.schemas()
    sim = spawn()
    assert sim.get('vmm.ping').status == 200
    assert 'validation is OFF' not in sim.logtext()
