"""Conformance tests for chsim against /work/shared/ch-api/FACTS.md (CH v53.0)."""

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import time

import pytest

from tests.support import chspec

from .conftest import base_env

GiB = 1 << 30
MiB = 1 << 20


def vm_body(kernel, **extra):
    body = {"payload": {"kernel": kernel, "cmdline": "console=ttyS0"},
            "console": {"mode": "Off"}}
    body.update(extra)
    return body


def assert_error(resp, status, *needles):
    assert resp.status == status, resp
    assert resp.headers.get("Content-Type") == "application/json"
    assert isinstance(resp.json, list) and resp.json, resp
    assert all(isinstance(m, str) for m in resp.json), resp
    text = " | ".join(resp.json)
    for n in needles:
        assert n in text, (n, resp.json)
    return text


def wait_until(pred, timeout=3.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------


def test_version_help_and_bad_flags(launcher):
    def run(*a, env=None):
        return subprocess.run([launcher] + list(a), capture_output=True, text=True,
                              env=base_env(env), timeout=10, check=False)

    r = run("--version")
    assert r.returncode == 0 and r.stdout == "cloud-hypervisor v53.0.0\nMigration Protocol Versions: 0\n"
    r = run("-V", env={"CHSIM_VERSION": "52.0.0"})
    assert r.returncode == 0 and r.stdout.splitlines()[0] == "cloud-hypervisor v52.0.0"
    r = run("-h")
    assert r.returncode == 0 and "--api-socket" in r.stdout
    r = run("--frobnicate")
    assert r.returncode != 0 and "unexpected argument '--frobnicate'" in r.stderr
    r = run("--cpus", "boot=x")
    assert r.returncode == 1 and "--cpus" in r.stderr
    r = run("--disk", "path=/x,bogus=1")
    assert r.returncode == 1 and "unknown option: bogus" in r.stderr
    r = run("--api-socket", "fd=3")
    assert r.returncode == 1 and "fd=" in r.stderr


def test_launcher_file(launcher):
    with open(launcher) as f:
        first = f.readline()
    assert first.startswith("#!/") and os.access(launcher, os.X_OK)


# --------------------------------------------------------------------------
# API basics
# --------------------------------------------------------------------------


def test_ping(spawn):
    sim = spawn()
    r = sim.get("vmm.ping")
    assert r.status == 200
    assert r.json == {"version": "53.0.0", "build_version": "v53.0.0", "pid": sim.proc.pid,
                      "features": ["io_uring", "kvm"]}
    assert oct(os.stat(sim.sock).st_mode & 0o777) == "0o600"
    old = spawn(env={"CHSIM_VERSION": "52.0.0"})
    assert old.get("vmm.ping").json["version"] == "52.0.0"
    assert old.get("vmm.ping").json["build_version"] == "v52.0.0"


def test_full_state_machine(spawn, files):
    sim = spawn()
    c = sim.client
    assert c.put("vm.create", vm_body(files.kernel())).status == 204
    assert sim.state() == "Created"
    assert "device_tree" not in sim.get("vm.info").json
    assert c.put("vm.boot").status == 204
    assert sim.state() == "Running"
    assert c.put("vm.boot").status == 500  # already booted
    assert c.put("vm.pause").status == 204
    assert sim.state() == "Paused"
    assert_error(c.put("vm.pause"), 500, "The VM could not be paused", "Paused")
    assert c.put("vm.resume").status == 204
    assert sim.state() == "Running"
    assert_error(c.put("vm.resume"), 500, "The VM could not resume")
    assert c.put("vm.reboot").status == 204
    assert sim.state() == "Running"
    assert c.put("vm.shutdown").status == 204
    assert sim.state() == "Created"
    assert_error(c.put("vm.shutdown"), 500, "VM is not running")
    assert_error(c.put("vm.pause"), 500, "VM is not running")
    assert c.put("vm.boot").status == 204
    assert sim.state() == "Running"
    assert c.put("vm.delete").status == 204
    assert_error(sim.get("vm.info"), 404, "VM is not created")
    assert c.put("vm.delete").status == 204  # nothing there: still fine
    # all of the above went over a single keep-alive connection
    assert c.connections == 1


def test_missing_config_and_double_create(spawn, files):
    sim = spawn()
    assert_error(sim.get("vm.info"), 404, "The VM info is not available", "VM is not created")
    assert_error(sim.put("vm.boot"), 404, "Error from API", "The VM could not boot",
                 "VM config is missing")
    assert_error(sim.put("vm.reboot"), 404)
    assert_error(sim.put("vm.power-button"), 500, "VM is not running")
    assert_error(sim.put("vm.resize", {"desired_vcpus": 2}), 404)
    assert_error(sim.put("vm.add-disk", {"path": "/x"}), 404)
    assert_error(sim.get("vm.counters"), 500)
    body = vm_body(files.kernel())
    assert sim.put("vm.create", body).status == 204
    assert_error(sim.put("vm.create", body), 500, "The VM could not be created",
                 "VM is already created")


def test_http_level_errors(spawn):
    sim = spawn()
    c = sim.client
    assert_error(c.get("vm.nonexistent"), 404, "Not Found")
    assert_error(c.request("GET", "/api/v2/vmm.ping"), 404)
    assert_error(c.request("GET", "/metrics"), 404)
    assert_error(c.get("vm.boot"), 400, "Bad Request")
    assert_error(c.put("vmm.ping"), 400)
    assert_error(c.request("DELETE", "vm.info"), 400)
    assert_error(c.put("vm.create", raw=b"{not json"), 400, "Failed to deserialize JSON")
    r = c.put("vm.create")  # no body: CH v53.0 answers 400 with an empty body
    assert (r.status, r.raw, r.headers.get("Content-Type"), r.headers.get("Content-Length")) == \
        (400, b"", "application/json", "0")
    assert_error(c.put("vm.boot", {}), 400, "Bad Request")  # body on a body-less action
    assert c.get("vmm.ping").status == 200
    assert c.connections == 1


def test_schema_validation(spawn, files, workdir):
    """serde as in CH v53.0 (transcript "errors"): types, enum variants and required fields are
    checked (400, serde_json's message and position); unknown fields are ignored."""
    chspec.schemas()    # skipped on a plain clone (no spec); fails where the spec must be there
    sim = spawn()
    k = files.kernel()
    bad = vm_body(k, cpus={"boot_vcpus": "two", "max_vcpus": 2})
    raw = json.dumps(bad)
    col = raw.index('"two"') + len('"two"')
    assert assert_error(sim.put("vm.create", raw=raw.encode()), 400) == \
        'Failed to deserialize JSON | invalid type: string "two", expected u32 at line 1 column %d' % col
    assert_error(sim.put("vm.create", vm_body(k, serial={"mode": "Banana"})), 400,
                 "unknown variant `Banana`, expected one of `Off`")
    assert_error(sim.put("vm.create", raw=b"[1, 2]"), 400)
    assert_error(sim.put("vm.create", raw=b"{bad"), 400, "key must be a string at line 1 column 2")
    assert_error(sim.get("vm.info"), 404)  # nothing got stored
    # unknown fields, at the top and nested, are accepted and dropped
    unknown = vm_body(k, frobnicate=True, memory={"size": 1 << 30, "hugepage": True},
                      disks=[{"path": "/x", "image_type": "Raw", "cache": "none"}])
    assert sim.put("vm.create", unknown).status == 204
    cfg = sim.get("vm.info").json["config"]
    assert "frobnicate" not in cfg and "hugepage" not in cfg["memory"]
    assert "cache" not in cfg["disks"][0]
    assert sim.put("vm.delete").status == 204
    # a config without payload is stored; vm.boot refuses it
    assert sim.put("vm.create", {"cpus": {"boot_vcpus": 1, "max_vcpus": 1}}).status == 204
    assert_error(sim.put("vm.boot"), 500, "Payload configuration is not bootable")
    assert sim.put("vm.delete").status == 204
    # serde: null for an Option<> field is fine
    nulls = vm_body(k, platform=None, rng={"src": "/dev/urandom", "id": None})
    assert sim.put("vm.create", nulls).status == 204
    assert_error(sim.put("vm.restore", {"prefault": True}), 400,
                 "missing field `source_url` at line 1 column 18")
    assert_error(sim.put("vm.remove-device", {}), 400, "missing field `id`")


def test_boot_failures_keep_created(spawn, files):
    sim = spawn()
    missing = files.path("no-such-kernel")
    assert sim.put("vm.create", vm_body(missing)).status == 204
    text = assert_error(sim.put("vm.boot"), 500, "The VM could not boot",
                        "Cannot open kernel file", "No such file or directory (os error 2)")
    assert text.startswith("Error from API")
    assert sim.state() == "Created"
    assert sim.put("vm.delete").status == 204

    disk = files.path("no-such-disk.raw")
    body = vm_body(files.kernel(), disks=[{"path": disk, "image_type": "Raw"}])
    assert sim.put("vm.create", body).status == 204
    assert_error(sim.put("vm.boot"), 500, "Cannot open disk path", "I/O error (path=%s op=open)" % disk)
    assert sim.state() == "Created"
    files.disk("no-such-disk.raw")
    assert sim.put("vm.boot").status == 204  # fixed on the host: boots now
    assert sim.put("vm.delete").status == 204

    body = vm_body(files.kernel(), cpus={"boot_vcpus": 4, "max_vcpus": 2})
    assert sim.put("vm.create", body).status == 204
    assert_error(sim.put("vm.boot"), 500, "Failed to validate config")
    assert sim.state() == "Created"


def test_config_echo_defaults_ids_and_device_tree(spawn, files):
    sim = spawn()
    body = {"payload": {"kernel": files.kernel()},
            "disks": [{"path": files.disk("a.raw"), "image_type": "Raw"},
                      {"path": files.disk("b.raw"), "readonly": True, "image_type": "Raw"}],
            "net": [{"mac": "52:54:00:12:34:56"}],
            "serial": {"mode": "Null"}}
    assert sim.put("vm.create", body).status == 204
    info = sim.get("vm.info").json
    cfg = info["config"]
    assert cfg["cpus"]["boot_vcpus"] == 1 and cfg["cpus"]["max_vcpus"] == 1
    assert cfg["cpus"]["kvm_hyperv"] is False and cfg["cpus"]["max_phys_bits"] == 46
    assert cfg["memory"]["size"] == 536870912 and cfg["memory"]["thp"] is True
    assert cfg["memory"]["shared"] is False and cfg["memory"]["hugepages"] is False
    assert cfg["serial"] == {"mode": "Null"} and cfg["console"]["mode"] == "Tty"
    assert cfg["rng"]["src"] == "/dev/urandom"
    assert cfg["iommu"] is False and cfg["watchdog"] is False and cfg["pvpanic"] is False
    d0 = cfg["disks"][0]
    assert (d0["readonly"], d0["direct"], d0["num_queues"], d0["queue_size"]) == (False, False, 1, 128)
    n0 = cfg["net"][0]
    assert n0["mac"] == "52:54:00:12:34:56" and n0["num_queues"] == 2 and n0["queue_size"] == 256
    assert "ip" not in n0 and "mask" not in n0 and "iommu" not in n0   # as CH v53.0 echoes it
    assert "hotplug_size" not in cfg["memory"] and "balloon" not in cfg  # unset: omitted
    assert info["memory_actual_size"] == 512 * MiB
    assert sim.put("vm.boot").status == 204
    info = sim.get("vm.info").json
    ids = [d["id"] for d in info["config"]["disks"]] + [info["config"]["net"][0]["id"]]
    assert ids == ["_disk0", "_disk1", "_net2"]
    tree = info["device_tree"]
    for i in ids:   # CH v53.0: the device's node hangs off its PCI transport, which has the BDF
        pci = tree[i]["parent"]
        assert pci == "_virtio-pci-" + i and tree[pci]["children"] == [i]
        assert re.match(r"^0000:00:[0-1][0-9a-f]\.0$", tree[pci]["pci_bdf"])
    bars = {i: tree["_virtio-pci-" + i]["resources"][0]["PciBar"]["type_"] for i in ids}
    assert bars == {"_disk0": "Mmio32", "_disk1": "Mmio32", "_net2": "Mmio64"}
    assert {"__serial", "__ioapic", "__rng", "__console"} <= set(tree)
    counters = sim.get("vm.counters").json
    assert set(counters) == set(ids)
    assert "read_bytes" in counters["_disk0"] and "rx_bytes" in counters["_net2"]
    assert sim.put("vm.shutdown").status == 204
    info = sim.get("vm.info").json
    assert "device_tree" not in info and info["config"]["disks"][0]["id"] == "_disk0"


# --------------------------------------------------------------------------
# power button, signals, exits
# --------------------------------------------------------------------------


def test_power_button_exits_the_vmm(spawn, files):
    sim = spawn()
    assert sim.put("vm.create", vm_body(files.kernel())).status == 204
    assert sim.put("vm.boot").status == 204
    assert sim.put("vm.power-button").status == 204
    assert sim.wait_exit(5) == 0
    assert not os.path.exists(sim.sock)


def test_power_button_no_shutdown(spawn, files):
    sim = spawn("--no-shutdown")
    assert sim.put("vm.create", vm_body(files.kernel())).status == 204
    assert sim.put("vm.boot").status == 204
    assert sim.put("vm.power-button").status == 204
    assert wait_until(lambda: sim.state() == "Created")
    assert sim.alive()
    assert sim.put("vm.boot").status == 204


def test_guest_ignoring_acpi(spawn, files):
    sim = spawn(env={"CHSIM_IGNORE_ACPI": "1"})
    assert sim.put("vm.create", vm_body(files.kernel())).status == 204
    assert sim.put("vm.boot").status == 204
    assert sim.put("vm.power-button").status == 204
    time.sleep(0.4)
    assert sim.alive() and sim.state() == "Running"


def test_acpi_delay(spawn, files):
    sim = spawn(env={"CHSIM_ACPI_DELAY": "0.6"})
    assert sim.put("vm.create", vm_body(files.kernel())).status == 204
    assert sim.put("vm.boot").status == 204
    t0 = time.monotonic()
    assert sim.put("vm.power-button").status == 204
    time.sleep(0.2)
    assert sim.alive() and sim.state() == "Running"
    assert sim.wait_exit(5) == 0
    assert time.monotonic() - t0 >= 0.55


def test_sigterm_exits_cleanly(spawn, files):
    sim = spawn()
    assert sim.put("vm.create", vm_body(files.kernel())).status == 204
    assert sim.put("vm.boot").status == 204
    sim.proc.send_signal(signal.SIGTERM)
    assert sim.wait_exit(5) == 0
    assert not os.path.exists(sim.sock)


def test_ignore_sigterm_needs_sigkill(spawn):
    sim = spawn(env={"CHSIM_IGNORE_SIGTERM": "1"})
    sim.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert sim.alive() and sim.get("vmm.ping").status == 200
    sim.client.close()
    sim.proc.send_signal(signal.SIGKILL)
    assert sim.wait_exit(5) == -signal.SIGKILL
    assert os.path.exists(sim.sock)  # SIGKILL leaves the stale socket behind


def test_stale_socket(spawn, workdir):
    sock = os.path.join(workdir, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sock)
    s.close()  # leaves the socket file, like a SIGKILLed CH
    sim = spawn(sock=sock, wait=False)
    assert sim.wait_exit(5) == 1
    err = sim.stderr() + sim.logtext()
    assert sock in err and "Address in use" in err
    assert os.path.exists(sock)
    sim = spawn(sock=sock, env={"CHSIM_STALE_SOCKET": "clean"})
    assert sim.get("vmm.ping").status == 200
    # v53 guards the socket with <sock>.lock: a second instance must not steal it
    other = spawn(sock=sock, env={"CHSIM_STALE_SOCKET": "clean"}, wait=False)
    assert other.wait_exit(5) == 1 and "in use" in other.stderr()
    assert sim.get("vmm.ping").status == 200


def test_vmm_shutdown(spawn, files):
    sim = spawn()
    assert sim.put("vm.create", vm_body(files.kernel())).status == 204
    assert sim.put("vm.boot").status == 204
    r = sim.put("vmm.shutdown")
    assert r.status == 200 and r.raw == b""  # CH answers 200 with an empty body
    assert sim.wait_exit(5) == 0
    assert not os.path.exists(sim.sock)


def test_slow_operations_knob(spawn, files):
    sim = spawn(env={"CHSIM_DELAY": "0.3"})
    t0 = time.monotonic()
    assert sim.put("vm.create", vm_body(files.kernel())).status == 204
    assert time.monotonic() - t0 >= 0.29
    t0 = time.monotonic()
    assert sim.get("vm.info").status == 200
    assert time.monotonic() - t0 < 0.25


# --------------------------------------------------------------------------
# resize and hotplug
# --------------------------------------------------------------------------


def test_resize(spawn, files):
    sim = spawn()
    body = vm_body(files.kernel(), cpus={"boot_vcpus": 1, "max_vcpus": 4},
                   memory={"size": GiB, "hotplug_size": GiB}, balloon={"size": 0})
    assert sim.put("vm.create", body).status == 204
    # cold resize just rewrites the config, like CH
    assert sim.put("vm.resize", {"desired_vcpus": 2}).status == 204
    assert sim.get("vm.info").json["config"]["cpus"]["boot_vcpus"] == 2
    assert sim.put("vm.boot").status == 204
    assert sim.put("vm.resize", {"desired_vcpus": 4}).status == 204
    assert sim.get("vm.info").json["config"]["cpus"]["boot_vcpus"] == 4
    assert_error(sim.put("vm.resize", {"desired_vcpus": 5}), 500, "The VM could not be resized")
    assert_error(sim.put("vm.resize", {"desired_vcpus": 0}), 500, "Requested zero vCPUs")
    # CH v53.0 writes the new RAM size to memory.size (hotplugged_size stays unset); the hotplug
    # region is size + hotplug_size as booted, whatever memory.size says later
    assert sim.put("vm.resize", {"desired_ram": GiB + 512 * MiB}).status == 204
    info = sim.get("vm.info").json
    assert info["memory_actual_size"] == GiB + 512 * MiB
    assert info["config"]["memory"]["size"] == GiB + 512 * MiB
    assert "hotplugged_size" not in info["config"]["memory"]
    assert_error(sim.put("vm.resize", {"desired_ram": 2 * GiB + 128 * MiB}), 500,
                 "Not enough space in the hotplug RAM region")
    # an ACPI DIMM is a multiple of 128 MiB (CH v53.0.0, seen with 128M + 100M)
    assert_error(sim.put("vm.resize", {"desired_ram": GiB + 612 * MiB}), 500,
                 "The requested hotplug memory addition is not a valid size")
    assert sim.put("vm.resize", {"desired_ram": 2 * GiB}).status == 204
    # ACPI RAM cannot be unplugged: a smaller size is accepted and only rewrites the config
    assert sim.put("vm.resize", {"desired_ram": GiB - 128 * MiB}).status == 204
    assert sim.get("vm.info").json["config"]["memory"]["size"] == GiB - 128 * MiB
    assert sim.put("vm.resize", {"desired_balloon": 256 * MiB}).status == 204
    assert sim.get("vm.info").json["memory_actual_size"] == GiB - 384 * MiB
    assert sim.put("vm.delete").status == 204
    assert sim.put("vm.create", vm_body(files.kernel())).status == 204
    assert sim.put("vm.boot").status == 204
    assert_error(sim.put("vm.resize", {"desired_balloon": MiB}), 500, "balloon")


def test_hotplug_disk_and_remove(spawn, files):
    sim = spawn()
    assert sim.put("vm.create", vm_body(files.kernel())).status == 204
    r = sim.put("vm.add-disk", {"path": files.disk("cold.raw"), "image_type": "Raw"})
    assert r.status == 204 and r.raw == b""
    assert len(sim.get("vm.info").json["config"]["disks"]) == 1
    assert sim.put("vm.boot").status == 204
    r = sim.put("vm.add-disk", {"path": files.disk("hot.raw"), "image_type": "Raw"})
    assert r.status == 200
    assert set(r.json) == {"id", "bdf"} and r.json["id"] == "_disk1"
    assert re.match(r"^0000:00:[0-1][0-9a-f]\.0$", r.json["bdf"])
    r2 = sim.put("vm.add-disk", {"path": files.disk("named.raw"), "id": "data",
                                 "image_type": "Raw"})
    assert r2.status == 200 and r2.json["id"] == "data" and r2.json["bdf"] != r.json["bdf"]
    assert_error(sim.put("vm.add-disk", {"path": files.disk("dup.raw"), "id": "data"}), 500,
                 "The disk could not be added to the VM", "not unique")
    assert_error(sim.put("vm.add-disk", {"path": files.path("missing.raw")}), 500,
                 "Cannot open disk path")
    info = sim.get("vm.info").json
    assert [d["id"] for d in info["config"]["disks"]] == ["_disk0", "_disk1", "data"]
    assert "data" in info["device_tree"]
    assert sim.put("vm.remove-device", {"id": "_disk1"}).status == 204
    info = sim.get("vm.info").json
    assert [d["id"] for d in info["config"]["disks"]] == ["_disk0", "data"]
    assert "_disk1" not in info["device_tree"]
    assert_error(sim.put("vm.remove-device", {"id": "nope"}), 500,
                 "The device could not be removed from the VM")
    # hot-added devices stay in the config across reboots
    assert sim.put("vm.reboot").status == 204
    assert "data" in sim.get("vm.info").json["device_tree"]


def test_disk_lock_between_vmms(spawn, files):
    disk = files.disk("shared.raw")
    body = vm_body(files.kernel(), disks=[{"path": disk, "image_type": "Raw"}])
    a, b = spawn(), spawn()
    for sim in (a, b):
        assert sim.put("vm.create", body).status == 204
    assert a.put("vm.boot").status == 204
    assert_error(b.put("vm.boot"), 500, "lock")
    assert a.put("vm.shutdown").status == 204
    assert b.put("vm.boot").status == 204


def test_resize_disk(spawn, files):
    sim = spawn()
    disk = files.disk("grow.raw", size=8 * MiB)
    assert sim.put("vm.create", vm_body(files.kernel(), disks=[
        {"path": disk, "image_type": "Raw", "id": "root"}])).status == 204
    assert_error(sim.put("vm.resize-disk", {"id": "root", "desired_size": 16 * MiB}), 500,
                 "The disk could not be resized")
    assert sim.put("vm.boot").status == 204
    assert sim.put("vm.resize-disk", {"id": "root", "desired_size": 16 * MiB}).status == 204
    assert os.path.getsize(disk) == 16 * MiB
    assert_error(sim.put("vm.resize-disk", {"id": "root", "desired_size": MiB}), 500, "shrink")
    assert_error(sim.put("vm.resize-disk", {"id": "nope", "desired_size": MiB}), 500)


def test_cli_vm_config(spawn, files, workdir):
    vsock = os.path.join(workdir, "vsock.sock")
    sim = spawn("--firmware", files.kernel("fw.bin"),
                "--cpus", "boot=2,max=8,topology=1:2:1:1,kvm_hyperv=on",
                "--memory", "size=2G,shared=on,hotplug_method=virtio-mem,hotplug_size=1G",
                "--disk", "path=%s,image_type=qcow2,id=root,num_queues=2" % files.disk("r.qcow2"),
                "--net", "mac=52:54:00:00:00:01,num_queues=4,id=eth0",
                "--balloon", "size=256M,deflate_on_oom=on",
                "--vsock", "cid=7,socket=%s" % vsock,
                "--platform", "serial_number=SN1,uuid=0a0b,oem_strings=[x,y]",
                "--serial", "null", "--console", "off", "--watchdog", "--pvpanic",
                "--seccomp", "log", "-vv")
    info = sim.get("vm.info").json
    cfg = info["config"]
    assert info["state"] == "Running"
    assert cfg["payload"] == {"firmware": files.path("fw.bin")}
    assert cfg["cpus"]["topology"] == {"threads_per_core": 1, "cores_per_die": 2,
                                       "dies_per_package": 1, "packages": 1}
    assert cfg["cpus"]["kvm_hyperv"] is True
    assert cfg["memory"]["size"] == 2 * GiB and cfg["memory"]["shared"] is True
    assert cfg["memory"]["hotplug_method"] == "VirtioMem"
    assert cfg["disks"][0]["image_type"] == "Qcow2" and cfg["disks"][0]["num_queues"] == 2
    assert cfg["net"][0]["mac"] == "52:54:00:00:00:01" and cfg["net"][0]["num_queues"] == 4
    assert cfg["balloon"] == {"size": 256 * MiB, "deflate_on_oom": True,
                              "free_page_reporting": False, "pci_segment": 0}
    assert cfg["vsock"]["cid"] == 7 and os.path.exists(vsock)
    assert cfg["platform"]["oem_strings"] == ["x", "y"]
    assert cfg["watchdog"] is True and cfg["pvpanic"] is True
    assert cfg["serial"]["mode"] == "Null" and cfg["console"]["mode"] == "Off"
    assert info["memory_actual_size"] == 2 * GiB - 256 * MiB
    assert sim.put("vmm.shutdown").status == 200
    assert sim.wait_exit(5) == 0
    assert not os.path.exists(vsock)


def test_power_button_while_paused(spawn, files):
    sim = spawn()
    assert sim.put("vm.create", vm_body(files.kernel())).status == 204
    assert sim.put("vm.boot").status == 204
    assert sim.put("vm.pause").status == 204
    assert sim.put("vm.power-button").status == 204
    time.sleep(0.3)
    assert sim.alive() and sim.state() == "Paused"
    assert sim.put("vm.resume").status == 204
    assert sim.wait_exit(5) == 0


# --------------------------------------------------------------------------
# snapshot / restore
# --------------------------------------------------------------------------


def _booted(spawn, files, *args, **kw):
    sim = spawn(*args, **kw)
    body = vm_body(files.kernel(), cpus={"boot_vcpus": 2, "max_vcpus": 2},
                   disks=[{"path": files.disk("root.raw"), "image_type": "Raw"}])
    assert sim.put("vm.create", body).status == 204
    assert sim.put("vm.boot").status == 204
    return sim


def test_snapshot_and_restore(spawn, files, workdir):
    sim = _booted(spawn, files)
    snap = os.path.join(workdir, "snap")
    os.mkdir(snap)
    url = "file://" + snap
    assert_error(sim.put("vm.snapshot", {"destination_url": url}), 500,
                 "The VM could not be snapshotted")
    assert os.listdir(snap) == []
    assert sim.put("vm.pause").status == 204
    assert_error(sim.put("vm.snapshot", {"destination_url": "file://" + snap + "-nope"}), 500,
                 "Destination is not a directory")
    assert sim.put("vm.snapshot", {"destination_url": url}).status == 204
    assert sorted(os.listdir(snap)) == ["config.json", "memory-ranges", "state.json"]
    st = os.stat(os.path.join(snap, "memory-ranges"))
    assert st.st_size == 512 * MiB
    assert st.st_blocks * 512 < st.st_size // 100  # sparse
    with open(os.path.join(snap, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["cpus"]["boot_vcpus"] == 2 and cfg["disks"][0]["id"] == "_disk0"
    with open(os.path.join(snap, "state.json")) as f:
        state = json.load(f)
    assert state["snapshot_counter"] == 1 and state["vcpus"] == 2 and state["boot_time"] > 0
    # the directory now holds a snapshot: CH refuses to overwrite it
    assert_error(sim.put("vm.snapshot", {"destination_url": url}), 500, "File exists")
    # restore needs a VMM without a config
    assert_error(sim.put("vm.restore", {"source_url": url}), 500,
                 "The VM could not be restored", "already created")
    assert sim.put("vm.resume").status == 204
    assert sim.put("vm.shutdown").status == 204
    assert sim.put("vm.delete").status == 204  # releases the disk lock too

    fresh = spawn()
    assert_error(fresh.put("vm.restore", {"source_url": url, "prefault": True,
                                          "memory_restore_mode": "OnDemand"}), 500)
    assert_error(fresh.get("vm.info"), 404)
    assert_error(fresh.put("vm.restore", {"source_url": "file://" + workdir}), 500,
                 "config.json")
    assert fresh.put("vm.restore", {"source_url": url, "prefault": True}).status == 204
    info = fresh.get("vm.info").json
    assert info["state"] == "Paused" and info["config"]["cpus"]["boot_vcpus"] == 2
    assert "_disk0" in info["device_tree"]
    assert "restored from %s" % snap in fresh.logtext()
    assert fresh.put("vm.resume").status == 204
    assert fresh.state() == "Running"
    fresh.put("vm.delete")

    again = spawn()
    assert again.put("vm.restore", {"source_url": url, "resume": True,
                                    "memory_restore_mode": "OnDemand"}).status == 204
    assert again.state() == "Running"
    assert again.put("vm.pause").status == 204
    snap2 = os.path.join(workdir, "snap2")
    os.mkdir(snap2)
    assert again.put("vm.snapshot", {"destination_url": "file://" + snap2}).status == 204
    with open(os.path.join(snap2, "state.json")) as f:
        state2 = json.load(f)
    assert state2["snapshot_counter"] == 2 and state2["boot_time"] == state["boot_time"]


def test_snapshot_enospc(spawn, files, workdir):
    small = os.path.join(workdir, "small")
    os.mkdir(small)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", small],
                       capture_output=True, check=False)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        sim = _booted(spawn, files)
        assert sim.put("vm.pause").status == 204
        assert_error(sim.put("vm.snapshot", {"destination_url": "file://" + small}), 500,
                     "No space left on device")
        assert sim.state() == "Paused"
    finally:
        subprocess.run(["umount", "-l", small], capture_output=True, check=False)


def test_restore_garbled_and_incomplete(spawn, workdir):
    snap = os.path.join(workdir, "bad")
    os.mkdir(snap)
    with open(os.path.join(snap, "config.json"), "w") as f:
        f.write("{garbage")
    sim = spawn()
    assert_error(sim.put("vm.restore", {"source_url": "file://" + snap}), 500, "config.json")
    assert_error(sim.get("vm.info"), 404)


def test_restore_at_start(spawn, files, workdir):
    sim = _booted(spawn, files)
    snap = os.path.join(workdir, "snap")
    os.mkdir(snap)
    assert sim.put("vm.pause").status == 204
    assert sim.put("vm.snapshot", {"destination_url": "file://" + snap}).status == 204
    sim.kill()
    restored = spawn("--restore", "source_url=file://%s,resume=true" % snap)
    assert restored.state() == "Running"
    paused = spawn("--restore", "source_url=file://%s,prefault=off,memory_restore_mode=copy"
                   % os.path.join(workdir, "nope"), wait=False)
    assert paused.wait_exit(5) == 1
    assert not os.path.exists(paused.sock)


# --------------------------------------------------------------------------
# VM on the command line, consoles, logs, events
# --------------------------------------------------------------------------


def test_kernel_at_start_boots(spawn, files):
    serial = files.path("serial.log")
    sim = spawn("--kernel", files.kernel(), "--cmdline", "console=ttyS0 root=/dev/vda",
                "--cpus", "boot=2,max=4", "--memory", "size=1G,hotplug_size=1G",
                "--disk", "path=%s,image_type=raw" % files.disk("a.raw"),
                "path=%s,readonly=on,image_type=raw" % files.disk("b.raw"),
                "--serial", "file=%s" % serial, "--console", "off",
                "--rng", "src=/dev/urandom")
    info = sim.get("vm.info").json
    assert info["state"] == "Running"
    cfg = info["config"]
    assert cfg["cpus"]["boot_vcpus"] == 2 and cfg["cpus"]["max_vcpus"] == 4
    assert cfg["memory"]["size"] == GiB and cfg["memory"]["hotplug_size"] == GiB
    assert [d.get("readonly") for d in cfg["disks"]] == [False, True]
    assert cfg["serial"] == {"mode": "File", "file": serial}
    with open(serial) as f:
        text = f.read()
    assert "simulated by chsim" in text and "login:" in text


def test_kernel_at_start_failure_exits(spawn, files):
    sim = spawn("--kernel", files.path("missing-vmlinux"), wait=False)
    assert sim.wait_exit(5) == 1
    assert "Cannot open kernel file" in sim.stderr()   # CH names no path
    assert not os.path.exists(sim.sock)


def test_pty_console(spawn, files):
    sim = spawn()
    assert sim.put("vm.create", vm_body(files.kernel(), serial={"mode": "Pty"})).status == 204
    assert sim.put("vm.boot").status == 204
    pty = sim.get("vm.info").json["config"]["serial"]["file"]
    assert pty.startswith("/dev/pts/") and os.path.exists(pty)


def test_request_log_and_events(spawn, files, workdir):
    reqlog = os.path.join(workdir, "requests.jsonl")
    events = os.path.join(workdir, "events.jsonl")
    env = {"CHSIM_REQUEST_LOG": reqlog}
    a = spawn("--event-monitor", "path=%s" % events, env=env)
    b = spawn(env=env)
    assert a.put("vm.create", vm_body(files.kernel())).status == 204
    assert a.put("vm.boot").status == 204
    assert a.put("vm.pause").status == 204
    assert a.put("vm.resume").status == 204
    assert b.put("vm.boot").status == 404
    assert a.put("vm.delete").status == 204
    with open(reqlog) as f:
        lines = [json.loads(x) for x in f]
    assert all(set(x) == {"t", "pid", "method", "endpoint", "status"} for x in lines)
    mine = [(x["method"], x["endpoint"], x["status"]) for x in lines if x["pid"] == a.proc.pid]
    assert mine == [("PUT", "vm.create", 204), ("PUT", "vm.boot", 204), ("PUT", "vm.pause", 204),
                    ("PUT", "vm.resume", 204), ("PUT", "vm.delete", 204)]
    assert [(x["endpoint"], x["status"]) for x in lines if x["pid"] == b.proc.pid] == \
        [("vm.boot", 404)]
    with open(events) as f:
        evs = [json.loads(x) for x in f]
    names = [(e["source"], e["event"]) for e in evs]
    for want in [("vmm", "starting"), ("vm", "booted"), ("vm", "paused"), ("vm", "resumed"),
                 ("vm", "shutdown"), ("vm", "deleted")]:
        assert want in names
    assert all("secs" in e["timestamp"] for e in evs)
    assert "API request event: vm.boot" in a.logtext()


# --------------------------------------------------------------------------
# startup latency: part of the simulator's spec (< 50 ms on a quiet machine)
# --------------------------------------------------------------------------


def _startup_times(launcher, workdir, tag, n=5):
    times = []
    for i in range(n):
        sock = os.path.join(workdir, "lat%s%d.sock" % (tag, i))
        t0 = time.monotonic()
        proc = subprocess.Popen([launcher, "--api-socket", "path=%s" % sock],
                                env=base_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            while True:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(sock)
                    break
                except OSError:
                    if time.monotonic() - t0 > 5:
                        raise
                    time.sleep(0.0005)
                finally:
                    s.close()
            times.append(time.monotonic() - t0)
        finally:
            proc.kill()
            proc.wait()
    return times


def test_startup_latency(launcher, workdir):
    """Spawn -> first successful connect: the spec says < 50 ms (median of 5).
    Asserted loosely (< 150 ms, best of up to 3 rounds) for noisy shared machines."""
    medians = []
    for rnd in range(3):
        times = _startup_times(launcher, workdir, rnd)
        median = statistics.median(times)
        medians.append(median)
        print("chsim startup latency: median %.1f ms over %d starts (%s)" % (
            median * 1000, len(times), ", ".join("%.1f" % (t * 1000) for t in times)))
        if median < 0.050:
            break
    assert min(medians) < 0.150, medians


# --------------------------------------------------------------------------
# taps (in a throwaway network namespace)
# --------------------------------------------------------------------------


def test_taps(spawn, files, netns):
    netns.add_tap("tap0")
    netns.add_tap("tapmq", multi_queue=True)
    k = files.kernel()
    a = spawn(netns=netns.name)
    assert a.put("vm.create", vm_body(k, net=[{"tap": "tap0"}])).status == 204
    assert a.put("vm.boot").status == 204
    assert "UP" in netns.link_flags("tap0")  # CH brings the tap up

    b = spawn(netns=netns.name)
    assert b.put("vm.create", vm_body(k, net=[{"tap": "tap0"}])).status == 204
    assert_error(b.put("vm.boot"), 500, "Unable to configure tap interface",
                 "Device or resource busy (os error 16)")
    assert b.state() == "Created"

    c = spawn(netns=netns.name)
    assert c.put("vm.create", vm_body(k, net=[{"tap": "tapmq", "num_queues": 4}])).status == 204
    assert c.put("vm.boot").status == 204

    d = spawn(netns=netns.name)
    assert d.put("vm.create", vm_body(k, net=[{"tap": "tap0", "num_queues": 4}])).status == 204
    assert_error(d.put("vm.boot"), 500, "Invalid argument")

    e = spawn(netns=netns.name)
    assert e.put("vm.create", vm_body(k, net=[{"tap": "tapnope"}])).status == 204
    assert_error(e.put("vm.boot"), 500, "tapnope")

    # shutting the first VM down releases the tap for the second one
    assert a.put("vm.shutdown").status == 204
    assert b.put("vm.boot").status == 204

    # hot-add / remove a net device on a live VM
    netns.add_tap("tap1")
    r = c.put("vm.add-net", {"tap": "tap1", "id": "hotnet"})
    assert r.status == 200 and r.json["id"] == "hotnet"
    assert_error(a.put("vm.boot"), 500, "Unable to configure tap interface",
                 "Device or resource busy")  # tap0 is b's now
    assert c.put("vm.remove-device", {"id": "hotnet"}).status == 204
    assert a.put("vm.delete").status == 204
    assert a.put("vm.create", vm_body(k, net=[{"tap": "tap1"}])).status == 204
    assert a.put("vm.boot").status == 204  # tap1 was released by remove-device
