#!/usr/bin/env bash
# ansible-test sanity for cloudhv.ch, locally (no Docker), on this machine's Python 3.11 only,
# with no ignore files. Called by scripts/test.sh (after lib.sh's setup_all) and `make sanity`.
#
# ansible-test needs the collection at .../ansible_collections/<namespace>/<name>, and treats
# every file under that directory as content. So it runs on a fresh copy of the files git would
# ship (tracked, plus untracked files that are not ignored), never on the repo itself: .venv,
# build/ and other people's scratch files stay out of its sight.
#
#   --local        use the interpreter running ansible-test (the project venv) as controller
#   --python 3.11  test only for 3.11: the other pythons pyenv has here are not our target
#   (no --requirements: ansible-test creates one cached virtualenv per sanity test under
#    ~/.ansible/test/venv and pip-installs that test's pinned requirements from PyPI the first
#    time; installing them into the project venv would clash with its own pins)
#
# Extra arguments go to ansible-test (e.g. tests/sanity/run.sh --test pylint -v).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$REPO/.venv"
DEST="$REPO/build/sanity/ansible_collections/cloudhv/ch"

# No ignore files: fix the finding instead (an empty file is tolerated).
for f in "$REPO"/tests/sanity/ignore-*.txt; do
  if [ -s "$f" ]; then
    echo "$f: sanity ignore files are not allowed in cloudhv.ch; fix the code instead" >&2
    exit 1
  fi
done

# The shellcheck sanity test only warns and passes when shellcheck is missing: install it (Debian
# package), as lib.sh does for the other tools, so our shell scripts are really checked.
# (pslint, the PowerShell test, has no targets here: the collection has no .ps1/.psm1 files.)
if ! command -v shellcheck >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then echo "need root to apt-get install shellcheck" >&2; exit 1; fi
  echo ">> installing Debian package: shellcheck"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
fi

# ansible-test bootstraps pip into each sanity virtualenv with pypa's get-pip.py, downloaded from
# ci-files.testing.ansible.com, which this machine cannot reach (PyPI only). It caches the script
# in ~/.ansible/test/cache/get_pip_<version>.py and uses a cached copy without downloading. We put
# a stand-in there, unless a real one is already cached: it takes the same command line
# (`python get_pip.py [pip options] pip==X [--no-setuptools] [--no-wheel]`), installs the pip
# bundled with Python (ensurepip, offline), then upgrades it to the pinned version from PyPI.
PIP_VERSION="$("$VENV/bin/python" -c 'from ansible_test._internal.python_requirements import get_venv_packages as g; from ansible_test._internal.host_configs import NativePythonConfig as P; print(g(P(version="3.11"))["pip"])')"
GET_PIP="$HOME/.ansible/test/cache/get_pip_${PIP_VERSION//./_}.py"
if [ ! -f "$GET_PIP" ] || grep -q 'cloudhv.ch stand-in' "$GET_PIP"; then
  mkdir -p "$(dirname "$GET_PIP")"
  cat > "$GET_PIP.tmp" <<'PY'
"""cloudhv.ch stand-in for pypa's get-pip.py (written by tests/sanity/run.sh)."""
import subprocess
import sys

ARGS = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'])
subprocess.check_call([sys.executable, '-m', 'pip', 'install'] + ARGS)
if '--no-setuptools' in sys.argv:
    # ensurepip may bring setuptools along; get-pip.py would not have installed it
    subprocess.call([sys.executable, '-m', 'pip', 'uninstall', '-q', '-y', 'setuptools'])
PY
  mv "$GET_PIP.tmp" "$GET_PIP"
fi

rm -rf "$REPO/build/sanity"
mkdir -p "$DEST"
# Tracked files deleted from the work tree are still listed by `git ls-files -c`: skip them.
(cd "$REPO" && git ls-files -co --exclude-standard -z) |
  (cd "$REPO" && while IFS= read -r -d '' f; do
     if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
   done) |
  (cd "$REPO" && tar --null --no-recursion -T - -cf -) |
  tar -C "$DEST" -xf -

cd "$DEST"
# ansible-test lists content with git when it finds a .git in the collection directory or any
# parent: without a repository of its own here it would find /work/main/.git, where build/ is
# ignored, and skip every target. An empty throwaway repository makes it list exactly this copy.
git init -q .
export PATH="$VENV/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$REPO/build/sanity"
exec "$VENV/bin/ansible-test" sanity --local --python 3.11 --color no "$@"
