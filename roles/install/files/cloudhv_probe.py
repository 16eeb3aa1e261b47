# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What roles/install needs to know from the target, in one call (run there, changes nothing).

Runs under the interpreter Ansible uses on the target (the one the modules import from), reads a
JSON request on stdin and prints JSON on stdout:

- the target-side dependencies of the modules and a plan to install what is missing;
- the digest and mode of each file the role installs, to compare with the pins.

Request: {"requirements": {"httpx": "0.23.3", ...},   Python libraries and their minimum versions
          "tools": ["qemu-img", "nft", "ip"],         commands the modules run
          "packages": {"qemu-img": "qemu-utils", "httpx": "python3-httpx", ...},
          "method": "auto" | "distro" | "pip" | "none",
          "os_family": "Debian", "break_system_packages": false,
          "files": {"/usr/local/bin/cloud-hypervisor": "sha256", ...},
          "download_dir": "/var/tmp/cloudhv.ch-download" (optional)}
Answer:  {"python", "venv", "externally_managed", "libs": {name: version or null},
          "tools": {name: path or null}, "os_packages": [...], "pip_packages": [...],
          "satisfied": [...], "errors": [...],
          "files": {path: {"exists", "digest" (hex or null), "mode" ("0755")}},
          "download": {"missing": [directories to create, outermost first], "existing": the closest
                       existing ancestor of the download directory's parent, "error": text or null}}
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig

EXTRA_PATH = ('/usr/local/sbin', '/usr/sbin', '/sbin')


def version_tuple(text):
    """'1:0.23.3-1+deb12u1' or '0.28.1' -> (0, 23, 3): upstream version, numbers only."""
    text = str(text or '').split(':', 1)[-1]
    text = re.split(r'[-+~]', text, 1)[0]
    return tuple(int(part) for part in re.findall(r'\d+', text))


def satisfies(version, minimum):
    return version is not None and version_tuple(version) >= version_tuple(minimum)


def lib_version(name):
    """Installed version of a Python library, or None when it cannot be imported."""
    try:
        import importlib.util
        if importlib.util.find_spec(name) is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        from importlib import metadata
        return metadata.version(name)
    except Exception:  # pylint: disable=broad-except
        pass
    try:
        module = __import__(name)
        return str(getattr(module, '__version__', '0'))
    except Exception:  # pylint: disable=broad-except
        return None


def which(tool):
    path = os.pathsep.join([os.environ.get('PATH', '')] + list(EXTRA_PATH))
    return shutil.which(tool, path=path)


def in_venv():
    return sys.prefix != getattr(sys, 'base_prefix', sys.prefix)


def externally_managed():
    """PEP 668: the distribution manages this interpreter's packages (pip refuses to touch them)."""
    stdlib = sysconfig.get_paths().get('stdlib') or ''
    return not in_venv() and os.path.exists(os.path.join(stdlib, 'EXTERNALLY-MANAGED'))


def apt_candidate(package):
    """The version apt would install, None when apt has none, '' when apt cannot be asked."""
    if not which('apt-cache'):
        return ''
    try:
        out = subprocess.run(['apt-cache', 'policy', package], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, check=False, timeout=60).stdout.decode()
    except (OSError, subprocess.SubprocessError):
        return ''
    match = re.search(r'Candidate:\s*(\S+)', out)
    if not match or match.group(1) == '(none)':
        return None
    return match.group(1)


def plan(request):
    reqs = request.get('requirements') or {}
    packages = request.get('packages') or {}
    method = request.get('method') or 'auto'
    family = request.get('os_family') or 'unknown'
    venv = in_venv()
    managed = externally_managed()
    pip_ok = venv or not managed or bool(request.get('break_system_packages'))
    out = {'python': sys.executable, 'python_version': '%d.%d.%d' % sys.version_info[:3],
           'venv': venv, 'externally_managed': managed, 'libs': {}, 'tools': {},
           'os_packages': [], 'pip_packages': [], 'satisfied': [], 'errors': []}
    pip_remedy = ('use a virtualenv as ansible_python_interpreter for this host (the role then '
                  'pip-installs into it), or set cloudhv_pip_break_system_packages: true')

    for tool in request.get('tools') or []:
        found = which(tool)
        out['tools'][tool] = found
        if found:
            out['satisfied'].append(tool)
        elif packages.get(tool):
            out['os_packages'].append(packages[tool])
        else:
            out['errors'].append('%s is missing and no package for it is known on %s: install it, or name '
                                 'its package in cloudhv_dependency_packages' % (tool, family))

    for lib in sorted(reqs):
        minimum = str(reqs[lib])
        have = lib_version(lib)
        out['libs'][lib] = have
        if satisfies(have, minimum):
            out['satisfied'].append('%s %s' % (lib, have))
            continue
        what = '%s>=%s' % (lib, minimum)
        found = 'missing' if have is None else 'only %s' % have
        if method == 'none':
            out['errors'].append('%s needs %s (%s) and cloudhv_python_deps is none' % (sys.executable, what, found))
            continue
        chosen = method if method != 'auto' else ('pip' if venv else 'distro')
        if chosen == 'distro':
            package = packages.get(lib)
            candidate = apt_candidate(package) if package and family == 'Debian' else ''
            usable = package and (candidate == '' or satisfies(candidate, minimum))
            if usable:
                out['os_packages'].append(package)
                continue
            why = ('no distribution package for %s is known on %s' % (lib, family) if not package else
                   '%s is not available' % package if candidate is None else
                   '%s %s is older than %s' % (package, candidate, minimum))
            if method == 'distro' or not pip_ok:
                out['errors'].append('%s needs %s (%s), and %s: %s' % (
                    sys.executable, what, found, why, pip_remedy if method == 'auto' else
                    'set cloudhv_python_deps: pip or auto'))
                continue
            chosen = 'pip'
        if not pip_ok:
            out['errors'].append('%s needs %s (%s), but pip may not install into this externally managed '
                                 'interpreter: %s' % (sys.executable, what, found, pip_remedy))
            continue
        out['pip_packages'].append(what)
    out['os_packages'] = sorted(set(out['os_packages']))
    return out


def file_facts(path, algorithm):
    """exists, hex digest with ``algorithm`` (None for anything but a regular file) and mode."""
    if not os.path.lexists(path):
        return {'exists': False, 'digest': None, 'mode': None}
    out = {'exists': True, 'digest': None, 'mode': '%04o' % (os.stat(path).st_mode & 0o7777)}
    if os.path.isfile(path):
        digest = hashlib.new(algorithm)
        with open(path, 'rb') as handle:
            for block in iter(lambda: handle.read(1 << 20), b''):
                digest.update(block)
        out['digest'] = digest.hexdigest()
    return out


def download_facts(download_dir):
    """The staging directories are <download_dir>.<random>: which of the parent directories of
    download_dir are missing (the role creates them), and whether the path can work at all."""
    out = {'missing': [], 'existing': None, 'error': None}
    if not download_dir:
        return out
    if not os.path.isabs(download_dir):
        out['error'] = 'cloudhv_download_dir must be an absolute path, got %r' % download_dir
        return out
    path = os.path.dirname(os.path.normpath(download_dir))
    while not os.path.lexists(path):
        out['missing'].insert(0, path)
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        out['error'] = ('cloudhv_download_dir is %s, but %s is not a directory'
                        % (download_dir, path))
    else:
        out['existing'] = path
    return out


def main():
    request = json.loads(sys.stdin.read() or '{}')
    answer = plan(request)
    answer['files'] = dict((path, file_facts(path, algorithm or 'sha256'))
                           for path, algorithm in (request.get('files') or {}).items())
    answer['download'] = download_facts(request.get('download_dir'))
    print(json.dumps(answer, sort_keys=True))


if __name__ == '__main__':
    main()
