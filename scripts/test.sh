#!/usr/bin/env bash
# Runs every test of the collection on a fresh Debian/Ubuntu machine (root): installs what it
# needs, then sanity, lint, unit, engine, simulator, network, integration and role tests, and the
# Molecule scenarios of extensions/molecule (tests/molecule runs `molecule test` for each, inside a
# throwaway network namespace; a failing scenario fails pytest, and with it the test command).
# Extra arguments go to pytest (e.g. scripts/test.sh -k ch_vm).
source "$(dirname "$0")/lib.sh"
setup_all
cd "$REPO" || exit 1
echo ">> ansible-test sanity"
bash "$REPO/tests/sanity/run.sh"
echo ">> ansible-lint --profile production"
"$VENV/bin/ansible-lint" --profile production -q
echo ">> pytest"
exec "$PY" -m pytest -n 2 --dist loadgroup -p no:cacheprovider "$@" tests
