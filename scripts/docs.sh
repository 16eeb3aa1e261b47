#!/usr/bin/env bash
# Renders the collection's module documentation as a small static site into build/docs/html
# (open build/docs/html/index.html), with antsibull-docs' Sphinx flow:
#   antsibull-docs sphinx-init   -> build/docs/src (conf.py, antsibull-docs.cfg, rst/index.rst)
#   antsibull-docs collection    -> build/docs/src/rst (one page per module, from ansible-doc)
#   sphinx-build -M html         -> build/docs/html
# Before that, `antsibull-docs lint-collection-docs --plugin-docs` checks the docs' markup (modules
# and role argument specs).
# The tools come from requirements-docs.txt, installed into .venv on first use.
# DOCS_STRICT=1 makes markup problems and Sphinx warnings fatal (CI). Leave it unset offline, where
# Sphinx cannot fetch the intersphinx inventories of docs.python.org / docs.ansible.com (those links
# then stay plain text and Sphinx warns about them).
source "$(dirname "$0")/lib.sh"
setup_all
cd "$REPO" || exit 1

stamp="$VENV/.docs-requirements.sha256"
want="$(sha256sum "$REPO/requirements-docs.txt" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -x "$VENV/bin/antsibull-docs" ] ||
   [ ! -x "$VENV/bin/sphinx-build" ]; then
  echo ">> installing the docs tools (requirements-docs.txt) into $VENV"
  "$PY" -m pip install -q --disable-pip-version-check -r "$REPO/requirements-docs.txt"
  echo "$want" > "$stamp"
fi

COLLECTION="$REPO/build/collections/ansible_collections/cloudhv/ch"
OUT="$REPO/build/docs"
SRC="$OUT/src"

echo ">> antsibull-docs lint-collection-docs"
if ! "$VENV/bin/antsibull-docs" lint-collection-docs --plugin-docs "$COLLECTION"; then
  if [ "${DOCS_STRICT:-0}" = 1 ]; then exit 1; fi
  echo ">> (the docs markup problems above do not stop the build; DOCS_STRICT=1 makes them fatal)"
fi

rm -rf "$OUT"
mkdir -p "$SRC"
chmod og-w "$SRC"  # antsibull-docs only writes into directories no one else can write to
echo ">> antsibull-docs sphinx-init"
"$VENV/bin/antsibull-docs" sphinx-init --use-current --squash-hierarchy --fail-on-error \
  --dest-dir "$SRC" --project cloudhv.ch --copyright 'cloudhv.ch contributors' \
  --title 'cloudhv.ch: Cloud Hypervisor for Ansible' --html-short-title cloudhv.ch \
  cloudhv.ch >/dev/null

echo ">> antsibull-docs collection"
mkdir -p "$SRC/rst"
chmod og-w "$SRC/rst"
(cd "$SRC" && "$VENV/bin/antsibull-docs" --config-file antsibull-docs.cfg collection \
  --cleanup everything --fail-on-error --use-current --squash-hierarchy --dest-dir rst cloudhv.ch)

echo ">> sphinx-build"
strict=()
if [ "${DOCS_STRICT:-0}" = 1 ]; then strict=(-W); fi
"$VENV/bin/sphinx-build" -M html "$SRC/rst" "$OUT" -c "$SRC" -q --keep-going "${strict[@]}"
echo ">> the docs site: $OUT/html/index.html"
