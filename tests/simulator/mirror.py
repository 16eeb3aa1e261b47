"""Write a local release mirror with STAND-IN artifacts, for the install role in tests and the demo.

    python tests/simulator/mirror.py DEST [--python PYTHON]

lays DEST out like GitHub's release downloads, which is what ``cloudhv_mirror_url`` expects:

    DEST/cloud-hypervisor/releases/download/v53.0/cloud-hypervisor-static[-aarch64]
    DEST/cloud-hypervisor/releases/download/v53.0/ch-remote-static[-aarch64]
    DEST/rust-hypervisor-firmware/releases/download/0.5.0/hypervisor-fw[-aarch64]
    DEST/edk2/releases/download/ch-1e1b96f126/CLOUDHV.fd, CLOUDHV_EFI.fd

None of them is the real thing: ``cloud-hypervisor-static`` is the CH simulator's launcher (see
install.py; it answers ``--version`` with ``cloud-hypervisor v53.0`` and serves the API),
``ch-remote-static`` a script that says it is a stand-in, and the firmware files are short text
files. Their digests are therefore NOT the pinned ones: DEST/checksums.json holds the sha256 of
each, keyed like the role's ``cloudhv_checksums`` (``<project>/<version>/<asset>``), and is printed.
"""

import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from install import install_launcher  # noqa: E402  pylint: disable=wrong-import-position

CH_TAG = 'v53.0'
FIRMWARE_VERSION = '0.5.0'
EDK2_TAG = 'ch-1e1b96f126'

CH_REMOTE = """#!/bin/sh
# STAND-IN for ch-remote (written by tests/simulator/mirror.py); not the real tool.
echo "ch-remote stand-in: the cloudhv.ch demo and tests install this in place of ch-remote {tag}" >&2
[ "$1" = "--version" ] && echo "ch-remote {tag}-standin" && exit 0
exit 1
"""


def _write(path, data, mode):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = '%s.tmp.%d' % (path, os.getpid())
    with open(tmp, 'wb') as handle:
        handle.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def build_mirror(dest, python=sys.executable):
    """Write the stand-in mirror under ``dest`` and return {key: 'sha256:<hex>'}."""
    dest = os.path.abspath(dest)
    ch_dir = os.path.join(dest, 'cloud-hypervisor', 'releases', 'download', CH_TAG)
    fw_dir = os.path.join(dest, 'rust-hypervisor-firmware', 'releases', 'download', FIRMWARE_VERSION)
    edk2_dir = os.path.join(dest, 'edk2', 'releases', 'download', EDK2_TAG)
    files = {}
    for suffix in ('', '-aarch64'):
        launcher = install_launcher(os.path.join(ch_dir, 'cloud-hypervisor-static' + suffix), python=python)
        files['cloud-hypervisor/%s/cloud-hypervisor-static%s' % (CH_TAG, suffix)] = launcher
        path = os.path.join(ch_dir, 'ch-remote-static' + suffix)
        _write(path, CH_REMOTE.format(tag=CH_TAG).encode(), 0o755)
        files['cloud-hypervisor/%s/ch-remote-static%s' % (CH_TAG, suffix)] = path
        path = os.path.join(fw_dir, 'hypervisor-fw' + suffix)
        _write(path, ('STAND-IN rust-hypervisor-firmware %s%s (not bootable)\n'
                      % (FIRMWARE_VERSION, suffix)).encode(), 0o644)
        files['rust-hypervisor-firmware/%s/hypervisor-fw%s' % (FIRMWARE_VERSION, suffix)] = path
    for name in ('CLOUDHV.fd', 'CLOUDHV_EFI.fd'):
        path = os.path.join(edk2_dir, name)
        _write(path, ('STAND-IN edk2 %s %s (not bootable)\n' % (EDK2_TAG, name)).encode(), 0o644)
        files['edk2/%s/%s' % (EDK2_TAG, name)] = path
    digests = {}
    for key, path in sorted(files.items()):
        with open(path, 'rb') as handle:
            digests[key] = 'sha256:' + hashlib.sha256(handle.read()).hexdigest()
    _write(os.path.join(dest, 'checksums.json'), (json.dumps(digests, indent=1, sort_keys=True) + '\n').encode(),
           0o644)
    return digests


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    python = sys.executable
    if '--python' in args:
        i = args.index('--python')
        python = args[i + 1]
        del args[i:i + 2]
    if len(args) != 1 or args[0] in ('-h', '--help'):
        sys.stderr.write('usage: mirror.py DEST [--python PYTHON]\n')
        return 2
    print(json.dumps(build_mirror(args[0], python=python), indent=1, sort_keys=True))
    return 0


if __name__ == '__main__':
    sys.exit(main())
