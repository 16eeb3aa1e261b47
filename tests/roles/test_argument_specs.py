"""The vms role validates each cloudhv_networks / cloudhv_vms entry against suboptions that mirror
the options of cloudhv.ch.ch_network / cloudhv.ch.ch_vm (meta/argument_specs.yml), and passes each
option on to the module (tasks/main.yml). Both must follow the modules: an option a module gains is
refused by the role until it is added here, and one the role passes that the module lost breaks
every run. Defaults are left out on purpose (the role passes only what an entry sets)."""
import os

import pytest
import yaml

from tests.support.ansible import REPO

COMMON = {'binary', 'state_dir', 'run_dir'}  # set once by the role, from its own variables
UNUSED = {'ch_network': {'api_timeout'}}  # accepted for module_defaults, not used (ch_network's notes)
KEYS = ('type', 'elements', 'choices', 'required')


def module_options(name):
    path = os.path.join(REPO, 'plugins', 'modules', name + '.py')
    source = open(path).read()
    doc = yaml.safe_load(source.split("DOCUMENTATION = r'''", 1)[1].split("'''", 1)[0])
    options = dict(doc['options'])
    for fragment in doc.get('extends_documentation_fragment', []):
        if fragment == 'cloudhv.ch.common':
            from ansible_collections.cloudhv.ch.plugins.doc_fragments.common import ModuleDocFragment
            options.update(yaml.safe_load(ModuleDocFragment.DOCUMENTATION)['options'])
    return dict((k, v) for k, v in options.items() if k not in COMMON | UNUSED.get(name, set()))


def shape(options, sub='suboptions'):
    """{name: (type, elements, choices, required, nested shape)} without descriptions/defaults."""
    out = {}
    for key, spec in options.items():
        nested = spec.get(sub) or spec.get('options') or spec.get('suboptions')
        out[key] = (tuple(spec.get(k) for k in KEYS[:3])
                    + (bool(spec.get('required')), shape(nested) if nested else None))
    return out


def role_spec():
    with open(os.path.join(REPO, 'roles', 'vms', 'meta', 'argument_specs.yml')) as handle:
        return yaml.safe_load(handle)['argument_specs']['main']['options']


@pytest.mark.parametrize('variable,module', [('cloudhv_vms', 'ch_vm'), ('cloudhv_networks', 'ch_network')])
def test_role_suboptions_mirror_the_module(variable, module):
    role = role_spec()[variable]
    assert shape(role['options'], 'options') == shape(module_options(module))
    assert all('default' not in spec for spec in role['options'].values()), 'defaults are the module\'s'


def argspec_shape(spec):
    """{name: (type, elements, choices, required, nested shape)} of an argument spec (or of the
    role's options, which use the same keys)."""
    out = {}
    for key, entry in spec.items():
        nested = entry.get('options')
        out[key] = (entry.get('type', 'str'), entry.get('elements'), entry.get('choices'),
                    bool(entry.get('required')), argspec_shape(nested) if nested else None)
    return out


def role_defaults(role, spec, prefix=''):
    """[(option, role's default, argspec's default)] for every default the role documents."""
    out = []
    for key, entry in role.items():
        if 'default' in entry:
            out.append((prefix + key, entry['default'], spec[key].get('default')))
        if entry.get('options'):
            out.extend(role_defaults(entry['options'], spec[key]['options'], prefix + key + '.'))
    return out


def test_role_vm_items_match_ch_vms_option_table():
    """Each cloudhv_vms item is validated by the role with the types, choices and elements ch_vm
    validates with (vm_options' table): a mismatch would refuse in the role what the module takes,
    or let through what it refuses. The role documents fewer defaults (unset means 'keep'), but
    one it documents is the module's."""
    from ansible_collections.cloudhv.ch.plugins.module_utils.vm_options import argument_spec
    table = dict((k, v) for k, v in argument_spec().items() if k not in COMMON)
    role = role_spec()['cloudhv_vms']['options']
    assert argspec_shape(role) == argspec_shape(table)
    for option, role_default, module_default in role_defaults(role, table):
        assert role_default == module_default, option


def test_role_hands_its_vms_whole_to_ch_vms():
    """cloudhv_vms entries go to one ch_vms task as they are: every suboption the role documents
    must be an option ch_vms takes per item (all of ch_vm's but the task-wide binary/state_dir/run_dir)."""
    from ansible_collections.cloudhv.ch.plugins.modules.ch_vms import item_spec
    with open(os.path.join(REPO, 'roles', 'vms', 'tasks', 'main.yml')) as handle:
        block = yaml.safe_load(handle)[0]['block']
    args = [t for t in block if t['name'] == 'Converge the VMs'][0]['cloudhv.ch.ch_vms']
    assert set(args) == {'vms', 'prune', 'parallel'}
    assert 'cloudhv_vms' in args['vms'] and 'cloudhv_prune_vms' in args['prune']
    assert set(role_spec()['cloudhv_vms']['options']) == set(item_spec()) - {'binary'}


@pytest.mark.parametrize('variable,module,task', [
    ('cloudhv_networks', 'ch_network', 'Create or update the networks')])
def test_role_passes_every_option_on(variable, module, task):
    with open(os.path.join(REPO, 'roles', 'vms', 'tasks', 'main.yml')) as handle:
        block = yaml.safe_load(handle)[0]['block']
    args = [t for t in block if t['name'] == task][0]['cloudhv.ch.' + module]
    assert set(args) == set(module_options(module))
    for key, value in args.items():
        if key == 'cloud_init':   # kept out of the loop items: its user data is secret
            assert value == '{{ cloudhv_vms_cloud_init[item.name] | default(omit) }}', (key, value)
        elif key not in ('name', 'state'):
            assert value == '{{ item.%s | default(omit) }}' % key, (key, value)


@pytest.mark.parametrize('role', ['install', 'preflight', 'vms'])
def test_role_has_galaxy_metadata_matching_its_argument_spec(role):
    """Galaxy's importer reads a role's description from meta/main.yml's galaxy_info (without it:
    "Could not get role description, no role metadata found" on the collection's page); it is the
    argument spec's short_description, so the two cannot drift apart."""
    meta_dir = os.path.join(REPO, 'roles', role, 'meta')
    with open(os.path.join(meta_dir, 'main.yml')) as handle:
        info = (yaml.safe_load(handle) or {}).get('galaxy_info') or {}
    with open(os.path.join(meta_dir, 'argument_specs.yml')) as handle:
        spec = yaml.safe_load(handle)['argument_specs']['main']
    assert info.get('description') == spec['short_description']
    assert info.get('license') == 'GPL-3.0-or-later' and info.get('author')
