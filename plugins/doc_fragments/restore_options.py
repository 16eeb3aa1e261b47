# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    # How Cloud Hypervisor restores a snapshot's memory: module_utils/restore_options.py holds the
    # argument spec and the checks. ch_snapshot uses this fragment; ch_vm repeats it under
    # clone_from (a fragment cannot add suboptions), and tests/unit/test_restore_options.py keeps
    # the two equal, with O(clone_from.memory_restore_mode) for O(memory_restore_mode).
    DOCUMENTATION = r'''
options:
  memory_restore_mode:
    description:
      - How CH loads the guest memory on restore. V(copy) reads it all; V(ondemand) maps it lazily
        (needs userfaultfd access).
    type: str
    choices: [copy, ondemand]
    default: copy
  prefault:
    description:
      - Populate the guest memory when restoring (CH's C(prefault)), so the guest does not fault it
        in page by page later. Needs O(memory_restore_mode=copy).
    type: bool
    default: false
'''
