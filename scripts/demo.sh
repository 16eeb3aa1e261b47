#!/usr/bin/env bash
# The main job: a real ansible-playbook run of playbooks/demo.yml on localhost. When no real
# Cloud Hypervisor binary is installed, the CH simulator (tests/simulator) stands in for it,
# and the playbook says so. The play runs inside a throwaway network namespace, so its bridge and
# taps never touch the host's own network; the namespace is removed at the end.
source "$(dirname "$0")/lib.sh"
setup_all
cd "$REPO" || exit 1
CH_BINARY="${CH_BINARY:-}"
if [ -z "$CH_BINARY" ] && [ -x /usr/local/bin/cloud-hypervisor ]; then CH_BINARY=/usr/local/bin/cloud-hypervisor; fi
SIMULATED=false
if [ -z "$CH_BINARY" ]; then
  SIMULATED=true
  CH_BINARY="$REPO/build/sim/cloud-hypervisor"
  "$PY" "$REPO/tests/simulator/install.py" "$CH_BINARY" >/dev/null
  echo "== No real Cloud Hypervisor found: the demo uses the CH SIMULATOR ($CH_BINARY) =="
fi
DEMO_ROOT="$REPO/build/demo"
rm -rf "$DEMO_ROOT"
mkdir -p "$DEMO_ROOT"
NS="cloudhv-demo-$$"
ip netns add "$NS"
trap 'ip netns pids "$NS" 2>/dev/null | xargs -r kill -9; ip netns del "$NS"' EXIT
ip -n "$NS" link set lo up
ip netns exec "$NS" "$VENV/bin/ansible-playbook" -i localhost, -c local "$REPO/playbooks/demo.yml" \
  -e "ansible_python_interpreter=$PY" \
  -e "cloudhv_demo_binary=$CH_BINARY" -e "cloudhv_demo_simulated=$SIMULATED" \
  -e "cloudhv_demo_root=$DEMO_ROOT" "$@"
