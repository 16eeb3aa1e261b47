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
  # ch_network dhcp: one dnsmasq per bridge (no system service)
  need_deb dnsmasq dnsmasq-base
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

# Debian's own Python and its packaged libraries, as a managed Debian 12 host has them: the
# module tests run once more with them (scripts/test.sh), so requirements.txt's lower bounds are
# tested, not guessed. Returns 1 (and says why) where /usr/bin/python3 or the packages are missing.
SYSTEM_PY=/usr/bin/python3
ensure_system_python_libs() {
  [ -x "$SYSTEM_PY" ] || { echo "no $SYSTEM_PY"; return 1; }
  if "$SYSTEM_PY" -c 'import httpx, pyroute2, pycdlib, yaml' >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then echo "cannot apt-get install"; return 1; fi
  echo ">> installing Debian packages: python3-httpx python3-pyroute2 python3-pycdlib python3-yaml"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends python3-httpx python3-pyroute2 python3-pycdlib python3-yaml \
    >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-httpx \
    python3-pyroute2 python3-pycdlib python3-yaml >/dev/null; } || { echo "apt-get install failed"; return 1; }
  "$SYSTEM_PY" -c 'import httpx, pyroute2, pycdlib, yaml' || { echo "still not importable"; return 1; }
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
