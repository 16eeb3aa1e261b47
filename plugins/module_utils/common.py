# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Module-side glue shared by every module: the common options and the one place where the
collection's exceptions become ``fail_json``."""


import copy
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


def fail_from_error(module, exc, **extra):
    """Turn one of the collection's exceptions into ``fail_json``."""
    if isinstance(exc, MissingDependency):
        module.fail_json(msg=missing_required_lib(exc.library, reason=exc.reason),
                         exception=exc.exception, **extra)
    module.fail_json(msg=exc.msg, **dict(exc.details, **extra))


def run_module(module, action, invocation=None):
    """Run ``action(module) -> dict`` and exit with its result, mapping errors in one place.

    Unexpected exceptions are reported with their traceback instead of a bare crash.
    ``invocation`` (see :func:`secret_invocation`) replaces the module_args Ansible would echo.
    """
    extra = {'invocation': invocation} if invocation is not None else {}
    try:
        result = action(module)
    except CloudHVError as exc:
        fail_from_error(module, exc, **extra)
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg="Unexpected error: %s: %s" % (type(exc).__name__, exc),
                         exception=traceback.format_exc(), **extra)
    result.update(extra)
    module.exit_json(**result)


def leaves(value):
    """Every leaf of ``value`` as text (the values a no_log option would mask)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from leaves(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from leaves(item)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def secret_invocation(module, *paths):
    """Keep secret option values (e.g. cloud_init.user_data) out of everything the module returns.

    A ``no_log`` option that holds a dict makes Ansible mask every leaf string of it anywhere in
    the output, so a user-data ``hostname: web1`` would mask the VM name in every path. Instead,
    the module echoes an invocation in which the secret options are replaced by a placeholder, and
    its results never contain them; their leaves are taken off the mask list. (Failures inside
    AnsibleModule's own argument checks happen before this and still mask everything.)
    """
    args = copy.deepcopy(module.params)
    for path in paths:
        holder, value = args, module.params
        for key in path[:-1]:
            holder = holder.get(key) if isinstance(holder, dict) else None
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(holder, dict) or not isinstance(value, dict) or value.get(path[-1]) is None:
            continue
        secret = value[path[-1]]
        holder[path[-1]] = 'VALUE_SPECIFIED_IN_NO_LOG_PARAMETER'
        if isinstance(secret, (dict, list)):
            module.no_log_values.difference_update(leaves(secret))
    return {'module_args': args}
