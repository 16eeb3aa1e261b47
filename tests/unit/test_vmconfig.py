"""vmconfig.py: the VmConfig field table behind ch_vm's extra_config check, against CH's OpenAPI
specs in shared/ch-api/ (tests/support/chspec.py: skipped on a plain clone, which has none)."""

import pytest

from ansible_collections.cloudhv.ch.plugins.module_utils.errors import OptionError
from ansible_collections.cloudhv.ch.plugins.module_utils.vmconfig import SCHEMAS, check_extra_config
from tests.support import chspec

SPECS = ('cloud-hypervisor-v53.0.yaml', 'cloud-hypervisor-main-2026-08.yaml')


def spec_fields():
    """{schema: {field: ref}} reachable from VmConfig, union of both specs (as the table)."""
    out = {}
    for name in SPECS:
        schemas = chspec.schemas(name)

        def walk(schema, schemas=schemas):
            fields = out.setdefault(schema, {})
            for field, prop in schemas[schema].get('properties', {}).items():
                ref = prop.get('$ref') or (prop.get('items') or {}).get('$ref')
                target = ref.split('/')[-1] if ref else None
                value = None
                if target and schemas[target].get('properties'):
                    value = ('[%s]' if 'items' in prop else '%s') % target
                    if target not in out:
                        walk(target)
                fields[field] = fields.get(field) or value
        walk('VmConfig')
    return out


def test_table_matches_the_specs():
    assert SCHEMAS == spec_fields()


@pytest.mark.parametrize('extra,option,field', [
    ({'no_such_field': 1}, 'extra_config', 'no_such_field'),
    ({'memory': {'no_such_field': 1}}, 'extra_config.memory', 'no_such_field'),
    ({'disks': [{'path': '/x'}, {'path': '/y', 'bogus': True}]}, 'extra_config.disks[1]', 'bogus'),
    ({'cpus': {'topology': {'sockets': 2}}}, 'extra_config.cpus.topology', 'sockets'),
    ({'rate_limit_groups': [{'id': 'g', 'rate_limiter_config': {'bandwidth': {'sise': 1}}}]},
     'extra_config.rate_limit_groups[0].rate_limiter_config.bandwidth', 'sise'),
])
def test_unknown_fields_are_refused_naming_the_option(extra, option, field):
    with pytest.raises(OptionError) as err:
        check_extra_config(extra)
    assert err.value.option == option and repr(field) in err.value.msg


def test_known_fields_pass_and_values_are_left_to_ch():
    check_extra_config({'memory': {'thp': True, 'zones': [{'id': 'z0', 'size': 1}]}, 'watchdog': True,
                        'disks': [{'path': '/x', 'queue_affinity': [{'queue_index': 0, 'host_cpus': [1]}]}],
                        'platform': {'oem_strings': ['a']}, 'generic-vhost-user': [], 'serial': 'not-a-dict'})
