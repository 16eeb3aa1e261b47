# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's exceptions.

Everything under module_utils raises these; the module layer
(:func:`module_utils.common.run_module`) is the one place that turns them into
``fail_json``. No Ansible imports here, so the engine stays usable from plain Python.
"""


class CloudHVError(Exception):
    """Base class. ``msg`` is shown to the user; ``details`` become extra result keys."""

    def __init__(self, msg, **details):
        super(CloudHVError, self).__init__(msg)
        self.msg = msg
        self.details = details

    def __str__(self):
        return self.msg


class OptionError(CloudHVError):
    """Bad input: always names the option, raised before anything on the host changes."""

    def __init__(self, option, problem, **details):
        self.option = option
        self.problem = problem
        super(OptionError, self).__init__("%s: %s" % (option, problem), option=option, **details)


class MissingDependency(CloudHVError):
    """A Python library or system tool the module needs is not installed on the target."""

    def __init__(self, library, reason=None, exception=None):
        self.library = library
        self.reason = reason
        self.exception = exception
        msg = "Failed to import the required Python library (%s)" % library
        if reason:
            msg += " %s" % reason
        super(MissingDependency, self).__init__(msg)


class VmmNotReachable(CloudHVError):
    """The CH API socket is missing or refuses connections (no VMM behind it)."""

    def __init__(self, socket_path, reason):
        self.socket_path = socket_path
        self.reason = reason
        super(VmmNotReachable, self).__init__(
            "VMM not reachable at %s: %s" % (socket_path, reason), api_socket=socket_path)


class ChApiError(CloudHVError):
    """CH answered with a non-2xx status. ``messages`` is CH's error chain, verbatim."""

    def __init__(self, endpoint, status, messages):
        self.endpoint = endpoint
        self.status = status
        self.messages = list(messages or [])
        text = "; ".join(self.messages) if self.messages else "(no error message)"
        super(ChApiError, self).__init__(
            "Cloud Hypervisor refused %s (HTTP %s): %s" % (endpoint, status, text),
            endpoint=endpoint, status=status, ch_messages=self.messages)


class VmmError(CloudHVError):
    """Starting, stopping or supervising the CH process failed."""


class BusyError(CloudHVError):
    """Another run holds the VM's lock and did not release it within the wait."""


class StateError(CloudHVError):
    """On-host records are missing, damaged or inconsistent."""


class RecordUnreadable(StateError):
    """A VM's record exists but cannot be used: damaged (truncated, not JSON, not an object),
    unreadable, or written by a newer release (an unknown record_version). Only that VM is
    affected: listings report it as unknown, and ch_vm state=absent force=true removes it."""


class HostError(CloudHVError):
    """The host cannot do what was asked (missing bridge, not enough memory, ...)."""


class NetworkError(CloudHVError):
    """A netlink or nftables operation failed."""
