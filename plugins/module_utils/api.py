# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cloud Hypervisor REST client over the VMM's unix socket (httpx).

One client keeps one connection for the whole module run. Errors:
  * VmmNotReachable - the socket is missing or nobody accepts on it;
  * ChApiError      - CH answered non-2xx; carries endpoint, HTTP status and CH's message array
                      (v53 answers most errors with 500 and a JSON array of strings).
No Ansible imports here.
"""


import json
import re
import traceback

from ansible_collections.cloudhv.ch.plugins.module_utils.errors import (
    ChApiError,
    MissingDependency,
    VmmNotReachable,
)

try:
    import httpx
    HTTPX_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - reported through MissingDependency
    httpx = None
    HTTPX_IMPORT_ERROR = traceback.format_exc()

BASE_URL = 'http://localhost/api/v1/'


def require_httpx():
    if httpx is None:
        raise MissingDependency('httpx', exception=HTTPX_IMPORT_ERROR)


# CH's error chain can carry a Rust backtrace ("...(os error 22)\n\nStack backtrace:\n   0: ...
# clone3.S:81:0)"): frames of CH's own threads, no use to a user; the closing parentheses stay
_BACKTRACE = re.compile(r'\n\s*\n\s*Stack backtrace:\n.*?(\)*)\s*$', re.S)


def _strip_backtrace(message):
    return _BACKTRACE.sub(lambda match: match.group(1), message)


def _messages(response):
    """CH's error body is a JSON array of strings (backtraces dropped); else the raw text."""
    text = response.text
    if not text:
        return []
    try:
        body = json.loads(text)
    except ValueError:
        return [text.strip()]
    if isinstance(body, list):
        return [_strip_backtrace(str(m)) for m in body]
    if isinstance(body, dict) and 'error' in body:
        return [str(body['error'])]
    return [json.dumps(body)]


class ChClient:
    """Client for one VMM. ``requests`` counts the requests sent (for API-economy checks)."""

    def __init__(self, socket_path, timeout=30.0):
        require_httpx()
        self.socket_path = socket_path
        self.timeout = timeout
        self.requests = 0
        self._client = None

    def _http(self):
        if self._client is None:
            # No TLS on a unix socket: verify=False spares httpx loading the CA bundle (~25 ms).
            transport = httpx.HTTPTransport(uds=self.socket_path, verify=False)
            self._client = httpx.Client(transport=transport, base_url=BASE_URL, timeout=self.timeout)
        return self._client

    def close(self):
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def call(self, method, endpoint, body=None, timeout=None):
        """Send one request; return the decoded JSON body (or None for 204)."""
        self.requests += 1
        kwargs = {}
        if body is not None:
            kwargs['content'] = json.dumps(body)
            kwargs['headers'] = {'Content-Type': 'application/json'}
        if timeout is not None:
            kwargs['timeout'] = timeout
        try:
            response = self._http().request(method, endpoint, **kwargs)
        except (httpx.ConnectError, FileNotFoundError, ConnectionRefusedError) as exc:
            self.close()
            raise VmmNotReachable(self.socket_path, _reason(exc))
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            # The VMM closed the connection (it exited, e.g. after vmm.shutdown).
            self.close()
            raise VmmNotReachable(self.socket_path, 'connection closed: %s' % _reason(exc))
        except httpx.TimeoutException as exc:
            self.close()
            raise VmmNotReachable(self.socket_path, 'no answer to %s within %ss (%s)'
                                  % (endpoint, timeout or self.timeout, type(exc).__name__))
        if not 200 <= response.status_code < 300:
            raise ChApiError(endpoint, response.status_code, _messages(response))
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ChApiError(endpoint, response.status_code,
                             ['invalid JSON in reply: %r' % response.text[:200]])

    # -- VMM ---------------------------------------------------------------------------------
    def ping(self):
        return self.call('GET', 'vmm.ping')

    def vmm_shutdown(self):
        return self.call('PUT', 'vmm.shutdown')

    # -- VM lifecycle ---------------------------------------------------------------------
    def info(self):
        return self.call('GET', 'vm.info')

    def counters(self):
        return self.call('GET', 'vm.counters')

    def create(self, config):
        return self.call('PUT', 'vm.create', config)

    def boot(self):
        return self.call('PUT', 'vm.boot')

    def shutdown(self):
        return self.call('PUT', 'vm.shutdown')

    def reboot(self):
        return self.call('PUT', 'vm.reboot')

    def power_button(self):
        return self.call('PUT', 'vm.power-button')

    def pause(self):
        return self.call('PUT', 'vm.pause')

    def resume(self):
        return self.call('PUT', 'vm.resume')

    def delete(self):
        return self.call('PUT', 'vm.delete')

    # -- live changes ---------------------------------------------------------------------
    def resize(self, desired_vcpus=None, desired_ram=None, desired_balloon=None):
        body = {}
        if desired_vcpus is not None:
            body['desired_vcpus'] = int(desired_vcpus)
        if desired_ram is not None:
            body['desired_ram'] = int(desired_ram)
        if desired_balloon is not None:
            body['desired_balloon'] = int(desired_balloon)
        return self.call('PUT', 'vm.resize', body)

    def resize_disk(self, disk_id, desired_size):
        return self.call('PUT', 'vm.resize-disk', {'id': disk_id, 'desired_size': int(desired_size)})

    def add_disk(self, disk_config):
        return self.call('PUT', 'vm.add-disk', disk_config)

    def add_net(self, net_config):
        return self.call('PUT', 'vm.add-net', net_config)

    def add_device(self, device_config):
        return self.call('PUT', 'vm.add-device', device_config)

    def add_vsock(self, vsock_config):
        return self.call('PUT', 'vm.add-vsock', vsock_config)

    def remove_device(self, device_id):
        return self.call('PUT', 'vm.remove-device', {'id': device_id})

    # -- snapshot / restore ---------------------------------------------------------------
    def snapshot(self, directory):
        return self.call('PUT', 'vm.snapshot', {'destination_url': 'file://%s' % directory})

    def restore(self, directory, prefault=False, memory_restore_mode='Copy', resume=False):
        body = {'source_url': 'file://%s' % directory, 'prefault': bool(prefault),
                'memory_restore_mode': memory_restore_mode, 'resume': bool(resume)}
        return self.call('PUT', 'vm.restore', body)


def _reason(exc):
    """Shortest useful text for a connection failure."""
    cause = exc
    while getattr(cause, '__cause__', None) is not None or getattr(cause, '__context__', None) is not None:
        cause = cause.__cause__ or cause.__context__
    text = str(cause) or type(cause).__name__
    return text
