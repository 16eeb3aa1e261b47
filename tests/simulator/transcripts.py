"""Conformance transcripts: scripted API conversations with Cloud Hypervisor.

A *scenario* is a sequence of steps against one fresh VMM (or, with a ``start`` step, a second
fresh VMM in the same directory). ``record_transcripts.py`` runs the scenarios against a real
``cloud-hypervisor`` and writes one JSON file per scenario to ``transcripts/``;
``test_transcripts.py`` replays the same steps against chsim and compares.

Every path below the scenario's temporary directory is written ``{root}`` (in requests, in the
command line and in the recorded responses).

Normalization (applied to the real responses when recording and to chsim's when replaying; the
rules are mechanical, nothing is hand-edited):

* every occurrence of the temporary directory in a response body -> ``{root}``;
* ``vmm.ping``: ``pid`` -> ``"{pid}"``;
* ``vm.info``: ``device_tree`` sorted by key (CH's hash map has no stable order); in it, every ``base`` of a resource (a guest physical address chosen by
  CH's allocator) -> ``"{addr}"``;
* ``vm.info``: a net entry's ``mac``/``host_mac`` not starting with ``52:54:00:`` (the prefix of
  every MAC the scenarios set) is one CH generated at random -> ``"{random-mac}"``;
* ``vm.counters``: every counter value (an integer that depends on guest activity) -> ``"{n}"``,
  devices and counters sorted by name (hash maps in CH);
* headers: only ``Content-Type`` (value or null), ``Connection`` (value or null) and whether
  ``Content-Length`` is present are recorded (its value is checked against the body length);
  the reason phrase of the status line is recorded as is.

Step kinds (``op``):

* ``request``: ``method``, ``path`` (below ``/api/v1/``), optional ``body`` (JSON) or ``raw`` (a
  string sent verbatim as the body, for bad JSON); the response is recorded;
* ``wait_exit``: wait (``timeout`` s) for the VMM process to exit; records whether it exited,
  its exit code and whether the API socket file was removed;
* ``start``: launch a fresh VMM with the scenario's command line (the previous one must be gone);
* ``signal``: send ``signal`` (e.g. ``SIGTERM``) to the VMM process.

Only the standard library is used: the recorder runs outside the project's virtualenv too.
"""

import copy
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
TRANSCRIPT_DIR = os.path.join(HERE, "transcripts")
MiB = 1 << 20

GUEST = "{root}/guest.elf"
SERIAL = {"mode": "File", "file": "{root}/serial.log"}
OFF = {"mode": "Off"}


def vm_config(**extra):
    """A small VmConfig booting the test guest: serial to a file, console off."""
    cfg = {"payload": {"kernel": GUEST, "cmdline": "console=ttyS0"},
           "memory": {"size": 128 * MiB}, "serial": dict(SERIAL), "console": dict(OFF)}
    cfg.update(extra)
    return cfg


def req(method, path, body=None, raw=None, note=None):
    step = {"op": "request", "method": method, "path": path}
    if body is not None:
        step["body"] = body
    if raw is not None:
        step["raw"] = raw
    if note:
        step["note"] = note
    return step


def GET(path, note=None):
    return req("GET", path, note=note)


def PUT(path, body=None, raw=None, note=None):
    return req("PUT", path, body=body, raw=raw, note=note)


OUR_MAC_PREFIX = "52:54:00:"
DISK = {"path": "{root}/disk0.raw", "image_type": "Raw", "id": "disk0"}
DISK1 = {"path": "{root}/disk1.raw", "image_type": "Raw", "id": "disk1"}
NET = {"tap": "chtap0", "mac": "52:54:00:12:34:56", "host_mac": "52:54:00:ab:cd:00", "id": "net0"}
NET1 = {"tap": "chtap1", "mac": "52:54:00:12:34:57", "host_mac": "52:54:00:ab:cd:01", "id": "net1"}

# name -> {"files": {relative path: size in bytes, or None for a directory},
#          "taps": [names to create in a network namespace], "sim_env": {...}, "steps": [...]}
SCENARIOS = {
    "lifecycle": {
        "files": {},
        # The test guest ignores ACPI: chsim's guest must too.
        "sim_env": {"CHSIM_IGNORE_ACPI": "1"},
        "steps": [
            GET("vmm.ping"),
            GET("vm.info", note="VmNotCreated"),
            PUT("vm.boot", note="no config"),
            PUT("vm.pause", note="no VM"),
            PUT("vm.resume", note="no VM"),
            PUT("vm.shutdown", note="no VM"),
            PUT("vm.reboot", note="no VM"),
            PUT("vm.power-button", note="no VM"),
            PUT("vm.delete", note="nothing to delete"),
            PUT("vm.create", vm_config()),
            GET("vm.info", note="Created: the config echo with CH's defaults"),
            PUT("vm.create", vm_config(), note="already created"),
            PUT("vm.pause", note="created, not booted"),
            PUT("vm.shutdown", note="created, not booted"),
            PUT("vm.boot"),
            GET("vm.info", note="Running, with device_tree"),
            PUT("vm.boot", note="already booted"),
            PUT("vm.resume", note="running: not paused"),
            PUT("vm.pause"),
            PUT("vm.pause", note="paused twice"),
            GET("vm.info", note="Paused"),
            PUT("vm.resume"),
            PUT("vm.reboot"),
            GET("vm.info", note="after reboot"),
            PUT("vm.power-button", note="the guest ignores ACPI"),
            GET("vm.info", note="still running"),
            PUT("vm.shutdown"),
            GET("vm.info", note="Created again after vm.shutdown"),
            PUT("vm.shutdown", note="shut down twice"),
            PUT("vm.boot", note="boot after shutdown"),
            GET("vm.info"),
            PUT("vm.delete", note="deletes a running VM"),
            GET("vm.info", note="VmNotCreated after delete"),
            PUT("vm.create", vm_config(cpus={"boot_vcpus": 2, "max_vcpus": 2})),
            PUT("vm.boot"),
            PUT("vmm.shutdown"),
            {"op": "wait_exit", "timeout": 10},
        ],
    },
    # The test guest with `poweroff` on its command line powers the VM off after its third tick
    # (about a second): without --no-shutdown the VMM exits.
    "poweroff": {
        "files": {},
        "sim_env": {"CHSIM_GUEST_POWEROFF": "1"},
        "steps": [
            PUT("vm.create", vm_config(payload={"kernel": GUEST,
                                                "cmdline": "console=ttyS0 poweroff"})),
            PUT("vm.boot"),
            GET("vm.info", note="running until the guest powers off"),
            {"op": "wait_exit", "timeout": 15},
        ],
    },
    # The last rungs of the collection's stop ladder: SIGTERM to the VMM of a running VM.
    "sigterm": {
        "files": {},
        "steps": [
            PUT("vm.create", vm_config()),
            PUT("vm.boot"),
            {"op": "signal", "signal": "SIGTERM"},
            {"op": "wait_exit", "timeout": 15},
        ],
    },
    "resize": {
        "files": {},
        # The test guest ignores ACPI (vCPU ejects) and has no virtio-balloon driver.
        "sim_env": {"CHSIM_IGNORE_ACPI": "1", "CHSIM_NO_BALLOON_DRIVER": "1"},
        "steps": [
            PUT("vm.resize", {"desired_vcpus": 2}, note="no VM"),
            PUT("vm.create", vm_config(cpus={"boot_vcpus": 1, "max_vcpus": 4},
                                       memory={"size": 128 * MiB, "hotplug_size": 256 * MiB},
                                       balloon={"size": 0})),
            PUT("vm.resize", {"desired_vcpus": 2}, note="cold resize before boot"),
            GET("vm.info", note="cold resize: echo"),
            PUT("vm.boot"),
            GET("vm.info"),
            PUT("vm.resize", {"desired_vcpus": 3}),
            GET("vm.info", note="boot_vcpus after a vCPU hot-add"),
            PUT("vm.resize", {"desired_vcpus": 5}, note="beyond max_vcpus"),
            PUT("vm.resize", {"desired_vcpus": 0}, note="zero vCPUs"),
            PUT("vm.resize", {"desired_ram": 256 * MiB}),
            GET("vm.info", note="hotplugged_size and memory_actual_size after a RAM hot-add"),
            PUT("vm.resize", {"desired_ram": 512 * MiB}, note="beyond size + hotplug_size"),
            PUT("vm.resize", {"desired_ram": 64 * MiB}, note="below the boot size"),
            PUT("vm.resize", {"desired_balloon": 32 * MiB}),
            GET("vm.info", note="balloon size and memory_actual_size (the guest has no balloon driver)"),
            PUT("vm.resize", {"desired_balloon": 1024 * MiB}, note="balloon larger than the RAM"),
            PUT("vm.resize", {}, note="empty body"),
            PUT("vm.resize", {"desired_vcpus": 2, "bogus": 1}, note="unknown field"),
            PUT("vm.resize", {"desired_vcpus": "two"}, note="wrong type"),
            PUT("vm.resize", note="no body"),
            PUT("vm.resize", {"desired_vcpus": 2}, note="vCPU hot-remove (the guest ignores ACPI)"),
            GET("vm.info", note="after the vCPU remove request"),
            PUT("vmm.shutdown"),
            {"op": "wait_exit", "timeout": 10},
        ],
    },
    "hotplug": {
        "sim_env": {"CHSIM_IGNORE_ACPI": "1"},   # the test guest never ejects a removed device
        "files": {"disk0.raw": 4 * MiB, "disk1.raw": 4 * MiB, "disk2.raw": 4 * MiB,
                  "disk3.raw": 4 * MiB},
        "steps": [
            PUT("vm.add-disk", DISK, note="no VM"),
            PUT("vm.remove-device", {"id": "disk0"}, note="no VM"),
            PUT("vm.create", vm_config()),
            PUT("vm.add-disk", DISK, note="cold add before boot"),
            GET("vm.info", note="cold-added disk in the echo"),
            PUT("vm.remove-device", {"id": "disk0"}, note="cold remove before boot"),
            PUT("vm.remove-device", {"id": "nope"}, note="cold remove of an unknown id"),
            PUT("vm.add-disk", DISK, note="cold add again"),
            PUT("vm.boot"),
            GET("vm.info", note="a disk in device_tree"),
            GET("vm.counters", note="per-device counters"),
            PUT("vm.add-disk", DISK1, note="hot-add"),
            PUT("vm.add-disk", DISK1, note="hot-add of a duplicate id"),
            PUT("vm.add-disk", {"path": "{root}/disk2.raw", "image_type": "Raw", "readonly": True},
                note="hot-add without an id"),
            PUT("vm.add-disk", {"path": "{root}/missing.raw", "image_type": "Raw", "id": "missing"},
                note="hot-add of a missing file"),
            PUT("vm.add-disk", {"path": "{root}/disk3.raw", "image_type": "Raw", "id": "disk3",
                                "bogus": 1}, note="unknown field"),
            PUT("vm.add-disk", {"image_type": "Raw"}, note="no path"),
            GET("vm.info", note="echo after the hot-adds"),
            PUT("vm.remove-device", {"id": "disk1"}),
            PUT("vm.remove-device", {"id": "disk1"}, note="removed twice"),
            PUT("vm.remove-device", {"id": "nope"}, note="unknown id"),
            PUT("vm.remove-device", {}, note="no id"),
            GET("vm.info", note="echo after the remove"),
            PUT("vm.add-disk", DISK1, note="hot-add again after remove"),
            PUT("vm.pause"),
            PUT("vm.add-disk", {"path": "{root}/disk2.raw", "image_type": "Raw", "id": "disk2"},
                note="hot-add while paused"),
            PUT("vm.resume"),
            GET("vm.info"),
            PUT("vmm.shutdown"),
            {"op": "wait_exit", "timeout": 10},
        ],
    },
    "net": {
        "files": {},
        "sim_env": {"CHSIM_IGNORE_ACPI": "1"},
        "taps": ["chtap0", "chtap1"],
        "steps": [
            PUT("vm.create", vm_config(net=[{"tap": "chtap0", "id": "net0", "ip": "10.0.0.1",
                                             "mask": "255.255.255.0", "mtu": 1400}])),
            GET("vm.info", note="before boot: a random guest MAC, no host MAC yet; ip/mask/mtu"),
            PUT("vm.delete"),
            PUT("vm.create", vm_config(net=[NET])),
            PUT("vm.boot"),
            GET("vm.info", note="net echo and device_tree"),
            GET("vm.counters", note="per-device counters"),
            PUT("vm.add-net", NET1, note="hot-add"),
            PUT("vm.add-net", NET1, note="hot-add of a duplicate id"),
            PUT("vm.add-net", {"tap": "chtap1", "id": "net2", "mac": "52:54:00:12:34:58",
                               "host_mac": "52:54:00:ab:cd:02"}, note="a tap already in use"),
            GET("vm.info", note="echo after the hot-add"),
            PUT("vm.remove-device", {"id": "net1"}),
            GET("vm.info", note="echo after the remove"),
            PUT("vmm.shutdown"),
            {"op": "wait_exit", "timeout": 10},
        ],
    },
    # The host this was recorded on (kvm_pvm) cannot snapshot a paused VM: CH fails reading the
    # vCPUs' nested state (GetNestedState, EINVAL) whatever cpus.nested says. So a successful
    # vm.snapshot, and a vm.restore of a real snapshot, are not in this transcript (see README).
    "snapshot-restore": {
        "files": {"empty": None},
        "steps": [
            PUT("vm.snapshot", {"destination_url": "file://{root}/snap"}, note="no VM"),
            PUT("vm.create", vm_config(cpus={"boot_vcpus": 1, "max_vcpus": 2})),
            PUT("vm.snapshot", {"destination_url": "file://{root}/snap"}, note="created, not booted"),
            PUT("vm.boot"),
            PUT("vm.snapshot", {"destination_url": "file://{root}/snap"}, note="while running"),
            PUT("vm.snapshot", {}, note="no destination_url"),
            PUT("vm.restore", {"source_url": "file://{root}/empty"}, note="while a VM exists"),
            GET("vm.info"),
            PUT("vmm.shutdown"),
            {"op": "wait_exit", "timeout": 10},
            {"op": "start"},
            PUT("vm.restore", {"source_url": "file://{root}/empty"}, note="not a snapshot"),
            PUT("vm.restore", {"source_url": "file://{root}/empty", "prefault": False,
                               "memory_restore_mode": "Copy", "resume": False},
                note="the collection's body, not a snapshot"),
            PUT("vm.restore", {"source_url": "file://{root}/missing"}, note="missing directory"),
            PUT("vm.restore", {"source_url": "file://{root}/empty", "bogus": 1}, note="unknown field"),
            PUT("vm.restore", {"prefault": False}, note="no source_url"),
            PUT("vm.restore", {"source_url": "file://{root}/empty", "memory_restore_mode": "Lazy"},
                note="bad memory_restore_mode"),
            GET("vm.info", note="nothing restored"),
            PUT("vmm.shutdown"),
            {"op": "wait_exit", "timeout": 10},
        ],
    },
    # A successful snapshot and restore. The recording host cannot snapshot with the stock
    # v53.0 (GetNestedState EINVAL on kvm_pvm, see "snapshot-restore"): this one is recorded with
    # the v53.0 build whose only change takes that EINVAL as "no nested state" (the lead
    # developer's /opt/ch53-nonested); the API code is upstream's.
    "snapshot": {
        "binary_env": "CH_BINARY_SNAPSHOT",   # the recorder takes this binary for it
        "binary_note": "v53.0 + local workaround: EINVAL from KVM_GET_NESTED_STATE = no nested state",
        "files": {"snap": None, "snap2": None},
        "steps": [
            PUT("vm.create", vm_config(cpus={"boot_vcpus": 1, "max_vcpus": 2})),
            PUT("vm.boot"),
            PUT("vm.pause"),
            PUT("vm.snapshot", {"destination_url": "file://{root}/snap"}),
            PUT("vm.snapshot", {"destination_url": "file://{root}/snap"},
                note="again into the same directory"),
            PUT("vm.snapshot", {"destination_url": "file://{root}/nodir"},
                note="destination directory missing"),
            PUT("vm.snapshot", {"destination_url": "/no/scheme"}, note="not a file:// URL"),
            GET("vm.info", note="still paused after the snapshots"),
            PUT("vm.resume"),
            PUT("vm.restore", {"source_url": "file://{root}/snap"}, note="while a VM exists"),
            PUT("vmm.shutdown"),
            {"op": "wait_exit", "timeout": 10},
            {"op": "start"},
            PUT("vm.restore", {"source_url": "file://{root}/snap", "prefault": True,
                               "memory_restore_mode": "OnDemand"},
                note="prefault with OnDemand"),
            GET("vm.info", note="after the refused restore"),
            PUT("vm.restore", {"source_url": "file://{root}/snap", "prefault": False,
                               "memory_restore_mode": "Copy", "resume": False}),
            GET("vm.info", note="restored: Paused"),
            PUT("vm.restore", {"source_url": "file://{root}/snap"}, note="restore twice"),
            PUT("vm.snapshot", {"destination_url": "file://{root}/snap2"},
                note="snapshot of a restored VM"),
            PUT("vm.resume"),
            GET("vm.info", note="resumed after restore"),
            PUT("vmm.shutdown"),
            {"op": "wait_exit", "timeout": 10},
            {"op": "start"},
            PUT("vm.restore", {"source_url": "file://{root}/snap2", "resume": True}),
            GET("vm.info", note="restored with resume: true"),
            PUT("vmm.shutdown"),
            {"op": "wait_exit", "timeout": 10},
        ],
    },
    "errors": {
        "files": {},
        "steps": [
            GET("nope", note="unknown endpoint"),
            GET("vm.nope", note="unknown vm endpoint"),
            PUT("vmm.ping", note="wrong method"),
            GET("vm.boot", note="wrong method"),
            PUT("vm.info", note="wrong method"),
            GET("vm.create", note="wrong method"),
            PUT("vm.create", raw="{bad", note="bad JSON"),
            PUT("vm.create", raw="", note="no body"),
            PUT("vm.create", raw="[]", note="a JSON array"),
            PUT("vm.create", vm_config(memory={"size": "big"}), note="wrong type"),
            PUT("vm.create", vm_config(serial={"mode": "Bogus"}), note="bad enum value"),
            # Each create that may be accepted is followed by vm.delete (always 204), so that the
            # next one meets a VMM without a config.
            PUT("vm.create", {"memory": {"size": 128 * MiB}}, note="no payload"),
            GET("vm.info", note="was the config without payload stored?"),
            PUT("vm.boot", note="boot without a payload"),
            PUT("vm.delete"),
            PUT("vm.create", vm_config(cpus={"boot_vcpus": 1, "max_vcpus": 1, "bogus": 1}),
                note="unknown field in cpus"),
            PUT("vm.delete"),
            PUT("vm.create", vm_config(disks=[{"path": "{root}/x", "bogus": 1}]),
                note="unknown field in a disk"),
            PUT("vm.delete"),
            GET("vm.counters", note="no VM"),
            PUT("vm.nmi", note="no VM"),
            PUT("vm.create", vm_config(bogus=1), note="unknown top-level field"),
            GET("vm.info", note="was the unknown top-level field stored?"),
            PUT("vm.delete"),
            PUT("vm.create", vm_config(cpus={"boot_vcpus": 2, "max_vcpus": 1}),
                note="boot_vcpus > max_vcpus"),
            PUT("vm.boot", note="boot with boot_vcpus > max_vcpus"),
            PUT("vm.delete"),
            PUT("vm.create", vm_config(payload={"kernel": "{root}/missing.elf"}),
                note="missing kernel"),
            PUT("vm.boot", note="boot with a missing kernel"),
            GET("vm.info", note="state after a failed boot"),
            PUT("vm.delete"),
            PUT("vm.create", vm_config(disks=[{"path": "{root}/missing.raw", "image_type": "Raw"}]),
                note="missing disk"),
            PUT("vm.boot", note="boot with a missing disk"),
            PUT("vm.delete"),
            PUT("vm.create", vm_config()),
            PUT("vm.boot", raw='{"a": 1}', note="a body on a body-less action"),
            PUT("vm.boot"),
            GET("vm.counters"),
            PUT("vmm.shutdown"),
            {"op": "wait_exit", "timeout": 10},
        ],
    },
}

# --------------------------------------------------------------------------
# placeholders and normalization
# --------------------------------------------------------------------------


def subst(obj, root):
    """Replace ``{root}`` in every string of obj (a request, a command line)."""
    if isinstance(obj, str):
        return obj.replace("{root}", root)
    if isinstance(obj, list):
        return [subst(x, root) for x in obj]
    if isinstance(obj, dict):
        return {k: subst(v, root) for k, v in obj.items()}
    return obj


def unroot(obj, root):
    if isinstance(obj, str):
        return obj.replace(root, "{root}")
    if isinstance(obj, list):
        return [unroot(x, root) for x in obj]
    if isinstance(obj, dict):
        return {k: unroot(v, root) for k, v in obj.items()}
    return obj


def normalize_body(path, body, root):
    """The documented rules (module docstring); body is decoded JSON (or a str if not JSON)."""
    body = unroot(copy.deepcopy(body), root)
    if path == "vmm.ping" and isinstance(body, dict) and "pid" in body:
        body["pid"] = "{pid}"
    if path == "vm.info" and isinstance(body, dict):
        if "device_tree" in body:   # a hash map in CH: its order varies from run to run
            body["device_tree"] = dict(sorted(body["device_tree"].items()))
        for node in (body.get("device_tree") or {}).values():
            for res in node.get("resources") or []:
                for val in res.values() if isinstance(res, dict) else []:
                    if isinstance(val, dict) and "base" in val:
                        val["base"] = "{addr}"
    if path == "vm.info" and isinstance(body, dict):
        for net in (body.get("config") or {}).get("net") or []:
            for key in ("mac", "host_mac"):
                if key in net and not str(net[key]).startswith(OUR_MAC_PREFIX):
                    net[key] = "{random-mac}"
    if path == "vm.counters" and isinstance(body, dict):   # hash maps in CH: sorted
        body = {name: {k: "{n}" for k in sorted(dev)} if isinstance(dev, dict) else dev
                for name, dev in sorted(body.items())}
    return body


def command_line(root):
    """The VMM command line of every scenario (as a list, ``{root}`` substituted)."""
    return subst(["--api-socket", "path={root}/api.sock", "--log-file", "{root}/ch.log", "-v"],
                 root)


# --------------------------------------------------------------------------
# HTTP over the API socket
# --------------------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Conversation:
    """Runs a scenario's steps against one VMM binary in a prepared root directory."""

    def __init__(self, binary, root, netns=None, env=None):
        self.binary = binary
        self.root = root
        self.netns = netns
        self.env = env
        self.proc = None
        self.conn = None
        self.sock = os.path.join(root, "api.sock")

    def start(self):
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("the previous VMM is still running")
        self.close_conn()
        cmd = [self.binary] + command_line(self.root)
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns] + cmd
        out = open(os.path.join(self.root, "vmm.out"), "ab")
        try:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.root, env=self.env)
        finally:
            out.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the VMM exited with %s at start" % self.proc.returncode)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.sock)
                return
            except OSError:
                time.sleep(0.01)
            finally:
                s.close()
        raise RuntimeError("the VMM's API socket %s never accepted" % self.sock)

    def close_conn(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, step):
        """Send one request step; returns the recorded (normalized) response."""
        step = subst(step, self.root)
        if "raw" in step:
            data = step["raw"].encode()
        elif "body" in step:
            data = json.dumps(step["body"]).encode()
        else:
            data = None
        headers = {"Accept": "*/*"}
        if data:
            headers["Content-Type"] = "application/json"
        if self.conn is None:
            self.conn = UnixHTTPConnection(self.sock)
        try:
            self.conn.request(step["method"], "/api/v1/" + step["path"], body=data or None,
                              headers=headers)
            resp = self.conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.close_conn()
            return {"error": type(e).__name__}
        if (resp.getheader("Connection") or "").lower() == "close":
            self.close_conn()
        length = resp.getheader("Content-Length")
        text = payload.decode("utf-8", "replace")
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = text
        return {
            "status": resp.status,
            "reason": resp.reason,
            "headers": {
                "Content-Type": resp.getheader("Content-Type"),
                "Content-Length": length is not None,
                "Connection": resp.getheader("Connection"),
            },
            "content_length_matches": length is None or int(length) == len(payload),
            "body": normalize_body(step["path"], body, self.root),
        }

    def wait_exit(self, step):
        self.close_conn()
        try:
            code = self.proc.wait(timeout=step.get("timeout", 10))
            exited = True
        except subprocess.TimeoutExpired:
            code, exited = None, False
        return {"exited": exited, "code": code, "socket_removed": not os.path.exists(self.sock)}

    def run(self, steps):
        """Run the steps (starting the VMM first); returns the steps with their results."""
        out = []
        self.start()
        for step in steps:
            step = dict(step)
            if step["op"] == "request":
                step["response"] = self.request(step)
            elif step["op"] == "wait_exit":
                step["result"] = self.wait_exit(step)
            elif step["op"] == "start":
                self.start()
            elif step["op"] == "signal":
                self.close_conn()
                self.proc.send_signal(getattr(signal, step["signal"]))
            else:
                raise ValueError("unknown step %r" % step["op"])
            out.append(step)
        return out

    def stop(self):
        self.close_conn()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def make_root():
    """The scenario's directory. Recorder and replay use the same prefix (same path length):
    serde's error positions (``at line 1 column 109``) count the paths in the request body."""
    return tempfile.mkdtemp(prefix="chrec-", dir="/tmp")


def write_test_guest(path):
    """The real_ch test guest (tests/support/testguest.py) at path."""
    subprocess.run([sys.executable, os.path.join(HERE, os.pardir, "support", "testguest.py"), path],
                   check=True)


class Netns:
    """A throwaway network namespace holding persistent vnet_hdr taps (removed by close())."""

    def __init__(self, taps, prefix="chrec"):
        self.name = "%s-%s" % (prefix, uuid.uuid4().hex[:8])
        r = subprocess.run(["ip", "netns", "add", self.name], capture_output=True, text=True,
                           check=False)
        if r.returncode != 0:
            raise OSError("ip netns add %s: %s" % (self.name, r.stderr.strip()))
        try:
            for tap in taps:
                subprocess.run(["ip", "netns", "exec", self.name, "ip", "tuntap", "add", "dev", tap,
                                "mode", "tap", "vnet_hdr"], check=True)
        except Exception:
            self.close()
            raise

    def close(self):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)


def prepare_root(root, scenario, guest_writer=write_test_guest):
    """Create the scenario's files in root; guest_writer(path) writes the kernel."""
    guest_writer(os.path.join(root, "guest.elf"))
    for rel, size in sorted(scenario.get("files", {}).items()):
        p = os.path.join(root, rel)
        if size is None:
            os.makedirs(p, exist_ok=True)
        else:
            with open(p, "wb") as f:
                f.truncate(size)


def transcript_path(name):
    return os.path.join(TRANSCRIPT_DIR, "%s.json" % name)


def load_transcript(name):
    with open(transcript_path(name)) as f:
        return json.load(f)
