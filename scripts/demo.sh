#!/usr/bin/env bash
# The main job: a real ansible-playbook run of playbooks/demo.yml on localhost. When no real
# Cloud Hypervisor binary is installed, the CH simulator (tests/simulator) stands in for it,
# and the playbook says so. The play runs inside a throwaway network namespace, so its bridge and
# taps never touch the host's own network; the namespace is removed at the end.
#
# In the simulation, CH is installed the way a site installs it: by the cloudhv.ch.install role,
# from a release mirror. The mirror is local (build/demo/mirror, written by
# tests/simulator/mirror.py) and holds STAND-IN artifacts: the simulator's launcher as
# cloud-hypervisor-static, text files as firmware. It is served over HTTP on 127.0.0.1 inside the
# namespace (a real download, as from a site mirror, rather than file:// URLs), and the role
# verifies each file against the digests mirror.py computed. Everything lands under build/demo.
source "$(dirname "$0")/lib.sh"
setup_all
cd "$REPO" || exit 1
CH_BINARY="${CH_BINARY:-}"
if [ -z "$CH_BINARY" ] && [ -x /usr/local/bin/cloud-hypervisor ]; then CH_BINARY=/usr/local/bin/cloud-hypervisor; fi
DEMO_ROOT="$REPO/build/demo"
rm -rf "$DEMO_ROOT"
mkdir -p "$DEMO_ROOT"
NS="cloudhv-demo-$$"
ip netns add "$NS"
trap 'ip netns pids "$NS" 2>/dev/null | xargs -r kill -9; ip netns del "$NS"' EXIT
ip -n "$NS" link set lo up
SIMULATED=false
MIRROR_URL=""
if [ -z "$CH_BINARY" ]; then
  SIMULATED=true
  CH_BINARY="$DEMO_ROOT/bin/cloud-hypervisor"   # where cloudhv.ch.install puts it
  "$PY" "$REPO/tests/simulator/mirror.py" "$DEMO_ROOT/mirror" >/dev/null
  MIRROR_URL="http://127.0.0.1:8553"
  ip netns exec "$NS" "$PY" -m http.server --bind 127.0.0.1 --directory "$DEMO_ROOT/mirror" 8553 \
    >"$DEMO_ROOT/mirror.log" 2>&1 &
  disown
  for _ in $(seq 50); do
    ip netns exec "$NS" "$PY" -c 'import socket; socket.create_connection(("127.0.0.1", 8553), 1)' \
      2>/dev/null && break
    sleep 0.1
  done
  echo "== No real Cloud Hypervisor found: the demo installs and uses the CH SIMULATOR =="
  echo "== (stand-in release mirror: $MIRROR_URL, serving $DEMO_ROOT/mirror) =="
fi
# A real CH boots a real guest: CLOUDHV_DEMO_KERNEL when given (a kernel that boots on this host),
# else the test guest of tests/support/testguest.py (a 32-bit PVH kernel that runs on any KVM host,
# printing a counter on its serial port; stock kernels do not boot on every host).
DEMO_KERNEL="${CLOUDHV_DEMO_KERNEL:-}"
DEMO_MARKER=""
if [ "$SIMULATED" = false ]; then
  echo "== Using the REAL Cloud Hypervisor: $CH_BINARY ($("$CH_BINARY" --version | head -n 1)) =="
  if [ -z "$DEMO_KERNEL" ]; then
    DEMO_KERNEL="$DEMO_ROOT/testguest.elf"
    "$PY" "$REPO/tests/support/testguest.py" "$DEMO_KERNEL"
    DEMO_MARKER="tick 00000001"   # the test guest's second counter line: it boots and runs
    echo "== guest: the test guest $DEMO_KERNEL (set CLOUDHV_DEMO_KERNEL=/path/to/vmlinux for another) =="
  fi
fi
ip netns exec "$NS" "$VENV/bin/ansible-playbook" -i localhost, -c local "$REPO/playbooks/demo.yml" \
  -e "ansible_python_interpreter=$PY" -e "cloudhv_demo_kernel=$DEMO_KERNEL" \
  -e "cloudhv_demo_serial_marker=$DEMO_MARKER" \
  -e "cloudhv_demo_binary=$CH_BINARY" -e "cloudhv_demo_simulated=$SIMULATED" \
  -e "cloudhv_demo_mirror_url=$MIRROR_URL" \
  -e "cloudhv_demo_root=$DEMO_ROOT" "$@"
