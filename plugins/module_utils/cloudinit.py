# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""NoCloud seed images for cloud-init (``cidata.iso``).

cloud-init's NoCloud datasource finds a filesystem labelled ``cidata`` and reads the files
``user-data``, ``meta-data`` and (optionally) ``network-config`` from its root. We build that
filesystem as an ISO 9660 image with Joliet and Rock Ridge, so the long, lower-case names survive
whichever extension the guest's kernel reads, and attach it to the VM as a read-only raw disk.

The flow for a caller:

1. :func:`render` validates and renders the files, and returns a digest of their content.
   Everything wrong with the user's input is raised here as :class:`OptionError`, before anything
   on the host changes.
2. :func:`needs_rebuild` compares that digest with the one stored in the VM record.
3. :func:`build_iso` writes the image atomically; the caller stores the digest in the record.

ISO images embed timestamps, so two builds of the same files differ byte for byte; that is why
the digest covers the *files* (in a canonical form), never the image.

User data routinely holds secrets (passwords, keys, tokens): nothing in this module logs it or
puts it in an exception message. It appears only in the ``files`` of :func:`render`'s result.

No Ansible imports here.
"""


import hashlib
import io
import math
import os
import re
import tempfile
import traceback

from ansible_collections.cloudhv.ch.plugins.module_utils.fsutil import fsync_dir
from ansible_collections.cloudhv.ch.plugins.module_utils.errors import (
    CloudHVError,
    HostError,
    MissingDependency,
    OptionError,
)

try:
    import yaml
except ImportError:
    yaml = None
    YAML_IMPORT_ERROR = traceback.format_exc()
else:
    YAML_IMPORT_ERROR = None

VOLUME_ID = 'cidata'
USER_DATA = 'user-data'
META_DATA = 'meta-data'
NETWORK_CONFIG = 'network-config'
# Written when the user gives no user data (None or ''): an explicit, empty cloud-config.
# It is exactly what an empty dict renders to, so ``user_data: {}``, ``user_data: ''`` and no
# user data at all give the same file and the same digest.
EMPTY_USER_DATA = b'#cloud-config\n{}\n'
CLOUD_CONFIG_HEADER = '#cloud-config'
# Bump when the canonical form or the image layout changes: existing images are then rebuilt.
DIGEST_VERSION = b'cloudhv.ch cidata v1\n'
FILE_NAME_RE = re.compile(r'^[a-z0-9][a-z0-9._-]{0,63}$')
ISO_MODE = 0o600


def _require_yaml():
    if yaml is None:
        raise MissingDependency('PyYAML', reason='to render cloud-init data',
                                exception=YAML_IMPORT_ERROR)


def _require_pycdlib():
    """pycdlib, imported on first use (building or reading an image): every ch_vm run with
    cloud_init renders the files for their digest, and a no-change run must not pay for it."""
    try:
        import pycdlib
    except ImportError:
        raise MissingDependency('pycdlib', reason='to build the cloud-init (cidata) image',
                                exception=traceback.format_exc())
    return pycdlib


def _type_name(value):
    return type(value).__name__


def _plain(value, option):
    """Copy ``value`` into plain dict/list/str/int/float/bool/None, or raise OptionError.

    This makes YAML dumping safe (SafeDumper refuses str and dict subclasses, and would write
    bytes or sets with tags cloud-init does not expect) and names the exact place of a problem,
    e.g. ``cloud_init.user_data.users[0].groups``. Messages name types and keys, never values.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise OptionError(option, "non-finite numbers (nan, inf) are not allowed")
        return float(value)
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise OptionError(option, "keys must be strings; found a key of type %s"
                                  % _type_name(key))
            result[str(key)] = _plain(item, '%s.%s' % (option, key))
        return result
    if isinstance(value, (list, tuple)):
        return [_plain(item, '%s[%d]' % (option, index)) for index, item in enumerate(value)]
    raise OptionError(option, "values of type %s cannot be written as cloud-init YAML"
                      % _type_name(value))


def _dump(data, option):
    try:
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False,
                              allow_unicode=True, width=1 << 30)
    except yaml.YAMLError as exc:
        # The message of a RepresenterError may quote the offending value: keep it out.
        raise OptionError(option, "cannot be represented as YAML (%s)" % type(exc).__name__)
    return text


def _yaml_problem(exc):
    """Describe a YAML parse error by position only: its snippet would echo the user's data."""
    problem = getattr(exc, 'problem', None) or 'invalid YAML'
    mark = getattr(exc, 'problem_mark', None)
    if mark is not None:
        return "%s at line %d, column %d" % (problem, mark.line + 1, mark.column + 1)
    return problem


def _parse_yaml(text, option, what):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise OptionError(option, "%s is not valid YAML: %s" % (what, _yaml_problem(exc)))


def _first_line(text):
    return text.split('\n', 1)[0].rstrip('\r \t')


def _render_user_data(user_data, option):
    if user_data is None or (isinstance(user_data, str) and user_data == ''):
        return EMPTY_USER_DATA
    if isinstance(user_data, dict):
        return (CLOUD_CONFIG_HEADER + '\n' + _dump(_plain(user_data, option), option)).encode('utf-8')
    if not isinstance(user_data, str):
        raise OptionError(option, "must be a string (any user-data format cloud-init accepts) or "
                                  "a dict (rendered as #cloud-config), not %s" % _type_name(user_data))
    text = str(user_data)
    if _first_line(text) == CLOUD_CONFIG_HEADER:
        # Only an exact '#cloud-config' first line: '#cloud-config-archive' is a YAML list,
        # '## template: jinja' needs rendering, scripts and MIME are not YAML at all.
        parsed = _parse_yaml(text, option, "the #cloud-config document")
        if parsed is not None and not isinstance(parsed, dict):
            raise OptionError(option, "a #cloud-config document must be a YAML mapping, "
                                      "not %s" % _type_name(parsed))
    elif text.lstrip().startswith(CLOUD_CONFIG_HEADER) and not text.startswith('#'):
        # cloud-init only recognizes the header at the very start: with anything before it the
        # whole document would be ignored without an error.
        raise OptionError(option, "starts with whitespace before '#cloud-config'; cloud-init "
                                  "only recognizes the header at the very beginning")
    return text.encode('utf-8')


def default_hostname(name):
    """The VM name as a host name: VM names may contain '_', which is not valid in a host name
    (hostnamectl refuses it and cloud-init's set_hostname fails), so it becomes '-'."""
    return re.sub(r'[^A-Za-z0-9-]', '-', name).strip('-') or name


def _render_meta_data(name, meta_data, option):
    if meta_data is not None and not isinstance(meta_data, dict):
        raise OptionError(option, "must be a dict, not %s" % _type_name(meta_data))
    merged = {'instance-id': 'iid-%s' % name, 'local-hostname': default_hostname(name)}
    merged.update(_plain(meta_data or {}, option))
    for key in ('instance-id', 'local-hostname'):
        value = merged[key]
        if not isinstance(value, str) or not value.strip():
            raise OptionError('%s.%s' % (option, key), "must be a non-empty string")
    return merged, _dump(merged, option).encode('utf-8')


def _render_network_config(network_config, option):
    if isinstance(network_config, dict):
        return _dump(_plain(network_config, option), option).encode('utf-8')
    if not isinstance(network_config, str):
        raise OptionError(option, "must be a string or a dict, not %s" % _type_name(network_config))
    parsed = _parse_yaml(network_config, option, "the network configuration")
    if not isinstance(parsed, dict):
        raise OptionError(option, "must be a YAML mapping (network config version 1 or 2), "
                                  "not %s" % _type_name(parsed))
    return str(network_config).encode('utf-8')


def digest_files(files):
    """sha256 (hex) over a canonical form of ``files`` (name -> bytes).

    Names are sorted and every name and content is length-prefixed, so no two different sets of
    files share a canonical form; the result does not depend on dict order, host or run.
    """
    sha = hashlib.sha256(DIGEST_VERSION)
    for name in sorted(files):
        data = files[name]
        encoded = name.encode('utf-8')
        sha.update(b'%d:' % len(encoded))
        sha.update(encoded)
        sha.update(b'%d:' % len(data))
        sha.update(data)
    return sha.hexdigest()


def render(name, user_data=None, meta_data=None, network_config=None, option='cloud_init'):
    """Validate and render the NoCloud files of VM ``name``.

    - ``user_data``: a string is written verbatim (any format cloud-init reads: #cloud-config,
      scripts, MIME, ...). If its first line is exactly ``#cloud-config`` it must parse as a YAML
      mapping. ``None`` and ``''`` mean "no user data" and write ``#cloud-config\\n{}\\n``, the
      same as an empty dict. A dict is rendered as ``#cloud-config`` followed by YAML, keys in
      the given order.
    - ``meta_data``: a dict; ``instance-id`` defaults to ``iid-<name>`` and ``local-hostname``
      to ``name`` (with any '_' turned into '-', see :func:`default_hostname`); the user's keys
      win. Changing the instance-id makes cloud-init run its
      per-instance modules again on the next boot.
    - ``network_config``: a string (verbatim, must parse as a YAML mapping) or a dict (rendered
      as YAML). The file is only written when this is given; ``None`` and ``''`` mean absent.

    Returns ``{'files': {name: bytes}, 'digest': hex, 'instance_id': str, 'hostname': str}``.
    Raises OptionError naming ``<option>.user_data`` etc. for anything cloud-init would reject.
    """
    if not isinstance(name, str) or not name:
        raise OptionError('name', "must be a non-empty string")
    _require_yaml()
    files = {}
    files[USER_DATA] = _render_user_data(user_data, '%s.user_data' % option)
    meta, files[META_DATA] = _render_meta_data(name, meta_data, '%s.meta_data' % option)
    if network_config is not None and not (isinstance(network_config, str) and network_config == ''):
        files[NETWORK_CONFIG] = _render_network_config(network_config,
                                                       '%s.network_config' % option)
    return {
        'files': files,
        'digest': digest_files(files),
        'instance_id': meta['instance-id'],
        'hostname': meta['local-hostname'],
    }


def _iso9660_names(names):
    """Level-1 ISO 9660 names (8.3, d-characters) for the file names, unique, stable."""
    result = {}
    used = set()
    for name in sorted(names):
        base = re.sub(r'[^A-Z0-9_]', '', name.upper()) or 'FILE'
        candidate = base[:8]
        counter = 0
        while candidate in used:
            counter += 1
            suffix = str(counter)
            candidate = base[:8 - len(suffix)] + suffix
        used.add(candidate)
        result[name] = '/%s.;1' % candidate
    return result


def build_iso(path, files):
    """Write ``files`` (name -> bytes) as a NoCloud seed image at ``path``.

    ISO 9660 with volume identifier ``cidata``, Joliet and Rock Ridge (names exactly as given),
    all files in the root directory. Written to a temporary file in the same directory, fsynced,
    chmod 0600 and renamed over ``path``: readers see the old image or the new one, never a
    partial one, and a failure leaves no temporary file behind.
    """
    pycdlib = _require_pycdlib()
    if not files:
        raise CloudHVError("build_iso: no files to write")
    for name, data in files.items():
        if not isinstance(name, str) or not FILE_NAME_RE.match(name):
            raise CloudHVError("build_iso: invalid file name %r" % (name,))
        if not isinstance(data, bytes):
            raise CloudHVError("build_iso: content of %s must be bytes, not %s"
                               % (name, _type_name(data)))
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    iso_names = _iso9660_names(files)
    iso = pycdlib.PyCdlib()
    tmp = None
    try:
        iso.new(interchange_level=1, vol_ident=VOLUME_ID, joliet=3, rock_ridge='1.09')
        for name in sorted(files):
            data = files[name]
            iso.add_fp(io.BytesIO(data), len(data), iso_names[name], rr_name=name,
                       joliet_path='/%s' % name)
        fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), suffix='.tmp',
                                   dir=directory)
        with os.fdopen(fd, 'wb') as handle:
            os.fchmod(handle.fileno(), ISO_MODE)
            iso.write_fp(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
        tmp = None
        fsync_dir(directory)
    except (OSError, IOError) as exc:
        raise HostError("cannot write the cloud-init image %s: %s"
                        % (path, exc.strerror or exc), path=path)
    except pycdlib.pycdlibexception.PyCdlibException as exc:
        raise CloudHVError("cannot build the cloud-init image %s: %s" % (path, exc), path=path)
    finally:
        try:
            iso.close()
        except Exception:  # pylint: disable=broad-except
            pass
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def read_iso(path):
    """Read the files of a seed image back: ``{name: bytes}`` by Rock Ridge names, or by Joliet
    names for an image without Rock Ridge, plain ISO 9660 names (lower-cased, version and
    trailing dot dropped) for an image with neither. Raises HostError when the file cannot be read
    and CloudHVError when it is not an ISO 9660 image."""
    pycdlib = _require_pycdlib()
    iso = pycdlib.PyCdlib()
    try:
        iso.open(path)
    except (OSError, IOError) as exc:
        raise HostError("cannot read the cloud-init image %s: %s" % (path, exc.strerror or exc),
                        path=path)
    except pycdlib.pycdlibexception.PyCdlibException as exc:
        raise CloudHVError("%s is not a readable ISO 9660 image: %s" % (path, exc), path=path)
    try:
        if iso.has_rock_ridge():
            key = 'rr_path'
        elif iso.has_joliet():
            key = 'joliet_path'
        else:
            key = 'iso_path'
        result = {}
        for child in iso.list_children(**{key: '/'}):
            if child.is_dot() or child.is_dotdot() or not child.is_file():
                continue
            if key == 'rr_path':
                name = child.rock_ridge.name().decode('utf-8')
            elif key == 'joliet_path':
                name = child.file_identifier().decode('utf-16-be')
            else:
                name = child.file_identifier().decode('ascii')
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, **{key: '/' + name})
            if key == 'iso_path':
                name = name.split(';', 1)[0].rstrip('.').lower()
            result[name] = out.getvalue()
        return result
    except pycdlib.pycdlibexception.PyCdlibException as exc:
        raise CloudHVError("cannot read the files of %s: %s" % (path, exc), path=path)
    finally:
        iso.close()


def needs_rebuild(path, digest, recorded_digest, verify=False):
    """True when the image at ``path`` must be (re)built.

    The image is rebuilt when it is missing, when the content digest differs from the one the
    caller recorded after the last build, or (with ``verify=True``) when the files inside the
    existing image do not match ``digest`` (damaged or edited by hand).
    """
    if not os.path.isfile(path):
        return True
    if recorded_digest != digest:
        return True
    if verify:
        try:
            return digest_files(read_iso(path)) != digest
        except CloudHVError:
            return True
    return False
