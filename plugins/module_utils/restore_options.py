# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How Cloud Hypervisor restores a snapshot's memory: the options ``memory_restore_mode`` and
``prefault``, defined once for ch_snapshot (top-level options) and ch_vm (``clone_from``
suboptions).

Their documentation is plugins/doc_fragments/restore_options.py (ch_snapshot extends it; ch_vm
repeats it under clone_from, and tests/unit/test_restore_options.py keeps the two equal).
No Ansible imports here.
"""


from ansible_collections.cloudhv.ch.plugins.module_utils.errors import OptionError

# option value -> CH's RestoreConfig.memory_restore_mode
MEMORY_RESTORE_MODES = {'copy': 'Copy', 'ondemand': 'OnDemand'}
DEFAULT_MODE = 'copy'


def argument_spec():
    """The two options' argument spec entries (a fresh dict on every call)."""
    return dict(
        memory_restore_mode=dict(type='str', default=DEFAULT_MODE, choices=list(MEMORY_RESTORE_MODES)),
        prefault=dict(type='bool', default=False),
    )


def check_restore_options(mode, prefault, prefix=''):
    """Validate the pair and return it normalized: ``(mode, prefault)``, mode defaulting to copy.

    ``prefix`` names where the options sit, e.g. ``'clone_from.'`` for ch_vm's clone_from, so
    errors name ``clone_from.prefault``. CH can only prefault memory it copies: ondemand maps the
    snapshot's memory lazily."""
    mode = mode or DEFAULT_MODE
    if mode not in MEMORY_RESTORE_MODES:
        raise OptionError(prefix + 'memory_restore_mode', "must be copy or ondemand, got %r" % (mode,))
    if prefault and mode == 'ondemand':
        raise OptionError(prefix + 'prefault', "cannot be combined with %smemory_restore_mode=ondemand (CH maps the memory "
                          "lazily then; prefault needs %smemory_restore_mode=copy)" % (prefix, prefix))
    return mode, bool(prefault)
