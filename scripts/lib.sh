# shellcheck shell=bash
# Shared setup for scripts/*.sh: Debian packages, the virtualenv, the collection link.
# Everything here is idempotent and quiet when there is nothing to do.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
PY="$VENV/bin/python"
DEBS_NEEDED=()

need_deb() {  # need_deb <command-or-path> <package>
  if ! command -v "$1" >/dev/null 2>&1 && [ ! -e "$1" ]; then DEBS_NEEDED+=("$2"); fi
}

ensure_debs() {
  need_deb nft nftables
  need_deb qemu-img qemu-utils
  need_deb ip iproute2
  need_deb git git
  need_deb make make
  need_deb /usr/sbin/sshd openssh-server
  need_deb ssh openssh-client
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then DEBS_NEEDED+=(python3-venv); fi
  if [ "${#DEBS_NEEDED[@]}" -gt 0 ]; then
    echo ">> installing Debian packages: ${DEBS_NEEDED[*]}"
    if [ "$(id -u)" != 0 ]; then echo "need root to apt-get install ${DEBS_NEEDED[*]}" >&2; exit 1; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${DEBS_NEEDED[@]}" >/dev/null
  fi
}

ensure_venv() {
  local stamp="$VENV/.requirements.sha256"
  local want
  want="$(cat "$REPO/requirements.txt" "$REPO/requirements-dev.txt" | sha256sum | cut -d' ' -f1)"
  if [ -x "$PY" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  echo ">> preparing the virtualenv $VENV"
  [ -x "$PY" ] || python3 -m venv "$VENV"
  "$PY" -m pip install -q --disable-pip-version-check --upgrade pip
  "$PY" -m pip install -q --disable-pip-version-check -r "$REPO/requirements-dev.txt"
  echo "$want" > "$stamp"
}

link_collection() {
  mkdir -p "$REPO/build/collections/ansible_collections/cloudhv"
  ln -sfn "$REPO" "$REPO/build/collections/ansible_collections/cloudhv/ch"
  export ANSIBLE_COLLECTIONS_PATH="$REPO/build/collections"
  export PATH="$VENV/bin:$PATH"
}

setup_all() {
  ensure_debs
  ensure_venv
  link_collection
}
