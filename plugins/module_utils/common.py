# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Module-side glue shared by every module: the common options and the one place where the
collection's exceptions become ``fail_json``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import traceback

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.cloudhv.ch.plugins.module_utils.errors import (
    CloudHVError,
    MissingDependency,
)

# Argument spec matching doc_fragments/common.py.
COMMON_ARGS = dict(
    binary=dict(type='path', default='/usr/local/bin/cloud-hypervisor'),
    state_dir=dict(type='path', default='/var/lib/cloudhv'),
    run_dir=dict(type='path', default='/run/cloudhv'),
    api_timeout=dict(type='float', default=30.0),
)


def common_argument_spec(**extra):
    spec = dict((k, dict(v)) for k, v in COMMON_ARGS.items())
    spec.update(extra)
    return spec


def fail_from_error(module, exc):
    """Turn one of the collection's exceptions into ``fail_json``."""
    if isinstance(exc, MissingDependency):
        module.fail_json(msg=missing_required_lib(exc.library, reason=exc.reason),
                         exception=exc.exception)
    module.fail_json(msg=exc.msg, **exc.details)


def run_module(module, action):
    """Run ``action(module) -> dict`` and exit with its result, mapping errors in one place.

    Unexpected exceptions are reported with their traceback instead of a bare crash.
    """
    try:
        result = action(module)
    except CloudHVError as exc:
        fail_from_error(module, exc)
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg="Unexpected error: %s: %s" % (type(exc).__name__, exc),
                         exception=traceback.format_exc())
    module.exit_json(**result)
