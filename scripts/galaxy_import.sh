#!/usr/bin/env bash
# Galaxy's import check (galaxy-importer, as run on every upload to Galaxy and Automation Hub) on
# the built tarball. Fails on any warning or error it logs: a Galaxy user sees them on the
# collection's page. Allowed: flake8's W503 and W504, which flag the two sides of the same line
# break and contradict each other. Its ansible-test run is off (tests/galaxy/importer.cfg):
# tests/sanity/run.sh runs sanity.
source "$(dirname "$0")/lib.sh"
setup_all
out="$REPO/build/galaxy-import"
rm -rf "$out" && mkdir -p "$out/tmp"
cd "$REPO" || exit 1
"$VENV/bin/ansible-galaxy" collection build --force --output-path "$out" . >/dev/null
tarball="$(ls "$out"/*.tar.gz)"
log="$out/importer.log"
status=0
cd "$out" || exit 1   # it writes importer_result.json into the working directory
GALAXY_IMPORTER_CONFIG="$REPO/tests/galaxy/importer.cfg" GALAXY_IMPORTER_TMP_ROOT_DIR="$out/tmp" \
  GALAXY_IMPORTER_ANSIBLE_LOCAL_TMP="$out/tmp/ansible" \
  "$PY" -m galaxy_importer.main --output-path "$out" "$tarball" >"$log" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
  cat "$log" >&2
  echo "galaxy-importer failed on $tarball (exit $status)" >&2
  exit 1
fi
found="$(grep -E '^(WARNING|ERROR)' "$log" | grep -Ev ': W50[34] ' || true)"
if [ -n "$found" ]; then
  echo "galaxy-importer: $(echo "$found" | wc -l) warning(s) on $tarball:" >&2
  echo "$found" >&2
  exit 1
fi
grep -q 'Importer processing completed successfully' "$log" || { cat "$log" >&2; echo "galaxy-importer did not finish" >&2; exit 1; }
echo "galaxy-importer: $(basename "$tarball") imports without warnings ($(grep -cE ': W50[34] ' "$log" || true) W503/W504 left by design)"
