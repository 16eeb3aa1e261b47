# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    # Options shared by every module of the collection. All of them can be set once for a
    # play with module_defaults and the group cloudhv.ch.ch.
    DOCUMENTATION = r'''
options:
  binary:
    description:
      - Path of the C(cloud-hypervisor) binary on the target.
    type: path
    default: /usr/local/bin/cloud-hypervisor
  state_dir:
    description:
      - Directory holding the collection's records of VMs, their managed disks, cloud-init
        images, logs and snapshots (C(<state_dir>/vms/<name>/)).
      - Created with mode C(0700) when missing.
    type: path
    default: /var/lib/cloudhv
  run_dir:
    description:
      - Directory for the API sockets, pid files and lock files of the VMMs
        (C(<run_dir>/<name>.sock)). Unix socket paths must stay under 108 bytes.
      - Created with mode C(0700) when missing.
    type: path
    default: /run/cloudhv
  api_timeout:
    description:
      - Seconds to wait for one answer of the Cloud Hypervisor API.
    type: float
    default: 30
notes:
  - All modules of this collection belong to the action group C(cloudhv.ch.ch), so these
    options can be set once with C(module_defaults) and C(group/cloudhv.ch.ch).
'''

    # Descriptions of the attributes every module documents; modules set only ``support``.
    ATTRIBUTES = r'''
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
  platform:
    description: Target OS/families that can be operated against.
    support: full
'''

    # The attribute shared by every module: membership of the action group.
    ACTION_GROUP = r'''
attributes:
  action_group:
    description: Use C(group/cloudhv.ch.ch) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - cloudhv.ch.ch
'''
