#!/usr/bin/env bash
# Runs every test of the collection on a fresh Debian/Ubuntu machine (root): installs what it
# needs, then sanity, lint, Galaxy's import check (scripts/galaxy_import.sh), unit, engine,
# simulator, network, integration and role tests, and the Molecule scenarios of extensions/molecule
# (tests/molecule runs `molecule test` for each, inside a throwaway network namespace; a failing
# scenario fails pytest, and with it the test command).
# Extra arguments go to pytest (e.g. scripts/test.sh -k ch_vm).
source "$(dirname "$0")/lib.sh"
need_deb mkfs.xfs xfsprogs   # tests only: the reflink (FICLONE) copy test makes an XFS image
need_deb as binutils          # tests only: re-assembles the real_ch test guest (tests/support/testguest.S)
need_deb busybox busybox     # tests only: udhcpc, the real DHCP client of the DHCP tests
setup_all
cd "$REPO" || exit 1
echo ">> ansible-test sanity"
bash "$REPO/tests/sanity/run.sh"
echo ">> ansible-lint --profile production"
"$VENV/bin/ansible-lint" --profile production -q
echo ">> galaxy-importer on the built tarball"
bash "$REPO/scripts/galaxy_import.sh"
if [ "$#" -eq 0 ]; then
  # The modules once more on Debian's own Python and packaged libraries (the lower bounds of
  # requirements.txt), before the full run whose closing line CI reads.
  if why="$(ensure_system_python_libs)"; then
    echo ">> pytest, modules on $SYSTEM_PY with Debian's python3-httpx/-pyroute2/-pycdlib"
    CLOUDHV_TEST_MODULE_PYTHON="$SYSTEM_PY" "$PY" -m pytest -q -n 2 --dist loadgroup -p no:cacheprovider \
      tests/integration/test_ch_vm.py tests/integration/test_ch_snapshot.py tests/integration/test_ch_vm_launcher.py \
      tests/integration/test_ch_host_info.py tests/network/test_vm_integration.py \
      tests/roles/test_install.py::test_install_check_mode_then_install_then_nothing_to_do
    debian_venv="$REPO/build/debian-venv"   # Debian's packages plus pytest only
    if [ -x "$debian_venv/bin/python" ] || "$SYSTEM_PY" -m venv --system-site-packages "$debian_venv"; then
      echo ">> pytest, the netlink/nftables engine in-process on $SYSTEM_PY with Debian's python3-pyroute2"
      "$debian_venv/bin/python" -m pip install -q --disable-pip-version-check "pytest>=8.0,<9.2" "pytest-xdist>=3.5"
      "$debian_venv/bin/python" -m pytest -q -n 2 -p no:cacheprovider \
        tests/network/test_nat.py tests/network/test_filtering.py tests/network/test_prune.py tests/network/test_taps.py
    else
      echo ">> NOT RUN: the engine tests on Debian's own Python (no venv module for $SYSTEM_PY)"
    fi
  else
    echo ">> NOT RUN: the module tests on Debian's own Python ($why)"
  fi
fi
echo ">> pytest"
exec "$PY" -m pytest -n 2 --dist loadgroup -p no:cacheprovider "$@" tests
