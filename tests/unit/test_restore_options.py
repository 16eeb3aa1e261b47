"""memory_restore_mode and prefault, defined once (module_utils/restore_options.py, documented by
doc_fragments/restore_options.py) for ch_snapshot's top-level options and ch_vm's clone_from."""
import pytest
import yaml

from ansible_collections.cloudhv.ch.plugins.doc_fragments.restore_options import ModuleDocFragment
from ansible_collections.cloudhv.ch.plugins.module_utils import restore_options, vm_options
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import OptionError
from ansible_collections.cloudhv.ch.plugins.modules import ch_snapshot, ch_vm

NAMES = ('memory_restore_mode', 'prefault')
FROZEN = dict(memory_restore_mode=dict(type='str', default='copy', choices=['copy', 'ondemand']),
              prefault=dict(type='bool', default=False))   # as both modules had them before


def fragment_options():
    return yaml.safe_load(ModuleDocFragment.DOCUMENTATION)['options']


def test_argument_spec_is_unchanged_and_used_by_both_modules():
    assert restore_options.argument_spec() == FROZEN
    snapshot_spec = ch_snapshot.argument_spec()
    clone_spec = vm_options.argument_spec()['clone_from']['options']
    for name in NAMES:
        assert snapshot_spec[name] == FROZEN[name]
        assert clone_spec[name] == FROZEN[name]


def test_the_fragment_documents_the_argument_spec():
    docs = fragment_options()
    assert set(docs) == set(NAMES)
    for name, spec in restore_options.argument_spec().items():
        assert (docs[name]['type'], docs[name]['default'], docs[name].get('choices')) == \
            (spec['type'], spec['default'], spec.get('choices')), name


def test_ch_snapshot_takes_its_docs_from_the_fragment():
    doc = yaml.safe_load(ch_snapshot.DOCUMENTATION)
    assert 'cloudhv.ch.restore_options' in doc['extends_documentation_fragment']
    assert not set(NAMES) & set(doc['options']), 'documented once, in the fragment'


def test_ch_vm_clone_from_suboptions_repeat_the_fragment():
    """A fragment cannot add suboptions, so ch_vm's clone_from repeats the text; it must not drift
    (the only difference: option links name clone_from's options)."""
    clone = yaml.safe_load(ch_vm.DOCUMENTATION)['options']['clone_from']['suboptions']
    for name, want in fragment_options().items():
        have = dict(clone[name])
        have['description'] = [line.replace('O(clone_from.', 'O(') for line in have['description']]
        for key in ('description', 'type', 'default', 'choices'):
            assert have.get(key) == want.get(key), (name, key)


@pytest.mark.parametrize('mode,prefault,expected', [
    (None, None, ('copy', False)), ('copy', True, ('copy', True)), ('ondemand', False, ('ondemand', False)),
    ('ondemand', None, ('ondemand', False)),
])
def test_valid_pairs_are_normalized(mode, prefault, expected):
    assert restore_options.check_restore_options(mode, prefault) == expected
    assert restore_options.check_restore_options(mode, prefault, prefix='clone_from.') == expected


@pytest.mark.parametrize('prefix', ['', 'clone_from.'])
def test_prefault_needs_copy(prefix):
    with pytest.raises(OptionError) as err:
        restore_options.check_restore_options('ondemand', True, prefix=prefix)
    assert err.value.option == prefix + 'prefault'
    assert err.value.problem == ("cannot be combined with %smemory_restore_mode=ondemand (CH maps the memory lazily "
                                 "then; prefault needs %smemory_restore_mode=copy)" % (prefix, prefix))


@pytest.mark.parametrize('prefix', ['', 'clone_from.'])
def test_unknown_mode(prefix):
    with pytest.raises(OptionError) as err:
        restore_options.check_restore_options('lazy', False, prefix=prefix)
    assert err.value.option == prefix + 'memory_restore_mode'
    assert err.value.problem == "must be copy or ondemand, got 'lazy'"


def test_ch_modes():
    assert restore_options.MEMORY_RESTORE_MODES == {'copy': 'Copy', 'ondemand': 'OnDemand'}
