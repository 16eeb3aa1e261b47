"""chsim - a Cloud Hypervisor v53.0 simulator for tests.

It accepts Cloud Hypervisor's command line, serves CH's REST API over a unix
socket (HTTP/1.1, keep-alive) with CH's VM state machine, status codes and
error bodies, opens disks and taps for real, and writes snapshots to disk.
No guest ever runs.  See README.md next to this file.

Only the standard library is imported at module level so that the API socket
is listening a few milliseconds after the process starts; the OpenAPI spec
(PyYAML + openapi-schema-validator) is loaded in a background thread.
"""

import _signal
import _socket
import _thread
import errno
import fcntl
import os
import struct
import sys
import time

_T0 = time.monotonic()


class _Lazy:
    """A module imported on first use: keeps the time to listen() minimal."""

    def __init__(self, name):
        self._name = name
        self._mod = None

    def __getattr__(self, attr):
        mod = self._mod
        if mod is None:
            mod = self._mod = __import__(self._name)
        return getattr(mod, attr)


json = _Lazy("json")
random = _Lazy("random")
socket = _Lazy("socket")
stat = _Lazy("stat")
threading = _Lazy("threading")

SPEC_FILE = "cloud-hypervisor-v53.0.yaml"
API_ROOT = "/api/v1/"
MiB = 1 << 20
DEFAULT_MEMORY = 512 * MiB

# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


def version_info():
    """(version, build_version) from CHSIM_VERSION, e.g. ("53.0.0", "v53.0.0") as CH v53.0's
    vmm.ping and --version report them."""
    raw = (os.environ.get("CHSIM_VERSION") or "53.0.0").strip().lstrip("vV")
    nums = []
    for part in raw.split(".")[:3]:
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        nums.append(int(digits or 0))
    while len(nums) < 3:
        nums.append(0)
    return "%d.%d.%d" % tuple(nums), "v%d.%d.%d" % tuple(nums)


def env_float(name, default=0.0):
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default


def env_flag(name):
    return (os.environ.get(name) or "").strip().lower() in ("1", "true", "yes", "on")


def oserr(exc):
    """Format an OSError like Rust's io::Error Display."""
    code = getattr(exc, "errno", None)
    if code:
        return "%s (os error %d)" % (os.strerror(code), code)
    return str(exc)


def bdf(slot, segment=0):
    return "%04x:%02x:%02x.%x" % (segment, 0, slot, 0)


def random_mac():
    b = [random.randint(0, 255) for _i in range(6)]
    b[0] = (b[0] & 0xFE) | 0x02  # locally administered unicast
    return ":".join("%02x" % x for x in b)


def deepcopy_json(obj):
    return json.loads(json.dumps(obj))


# --------------------------------------------------------------------------
# logging, events, request log
# --------------------------------------------------------------------------


class Logger:
    LEVELS = {"ERROR": 0, "WARN": 0, "INFO": 1, "DEBUG": 2}

    def __init__(self):
        self.f = None
        self.verbosity = 0
        self.lock = _thread.allocate_lock()

    def open(self, path, verbosity):
        self.verbosity = verbosity
        if path:
            # CH opens its log file with File::create (truncates).
            self.f = open(path, "w", buffering=1)

    def log(self, level, msg):
        if self.LEVELS.get(level, 1) > self.verbosity:
            return
        elapsed = (time.monotonic() - _T0) * 1000.0
        line = "cloud-hypervisor: %.6fms: <%s> %s:chsim -- %s\n" % (
            elapsed, threading.current_thread().name, level, msg)
        with self.lock:
            try:
                f = self.f or sys.stderr
                f.write(line)
                f.flush()
            except Exception:
                pass

    def error(self, msg):
        self.log("ERROR", msg)

    def warn(self, msg):
        self.log("WARN", msg)

    def info(self, msg):
        self.log("INFO", msg)

    def debug(self, msg):
        self.log("DEBUG", msg)


LOG = Logger()


class EventMonitor:
    def __init__(self):
        self.fd = None
        self.lock = _thread.allocate_lock()
        self.pretty = env_flag("CHSIM_EVENT_PRETTY")

    def open(self, spec):
        if not spec:
            return
        if spec.startswith("fd="):
            self.fd = int(spec[3:])
            return
        path = spec[5:] if spec.startswith("path=") else spec
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)

    def emit(self, source, event, properties=None):
        if self.fd is None:
            return
        el = time.monotonic() - _T0
        obj = {"timestamp": {"secs": int(el), "nanos": int((el - int(el)) * 1e9)},
               "source": source, "event": event, "properties": properties}
        if self.pretty:
            data = json.dumps(obj, indent=2) + "\n\n"
        else:
            data = json.dumps(obj) + "\n"
        with self.lock:
            try:
                os.write(self.fd, data.encode())
            except OSError:
                pass


EVENTS = EventMonitor()


REQUEST_LOG_BODIES = ("vm.restore", "vm.snapshot", "vm.resize")   # small bodies tests look into


def request_log(method, endpoint, status, body=None):
    path = os.environ.get("CHSIM_REQUEST_LOG")
    if not path:
        return
    entry = {"t": time.time(), "pid": os.getpid(), "method": method, "endpoint": endpoint,
             "status": status}
    if body and endpoint in REQUEST_LOG_BODIES:
        try:
            entry["body"] = json.loads(body)
        except ValueError:
            entry["body"] = None
    line = json.dumps(entry) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError as e:
        LOG.warn("cannot write request log %s: %s" % (path, oserr(e)))


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------


class VmErr(Exception):
    """An error below the API layer: a chain of messages (outermost first)."""

    def __init__(self, *chain, status=500):
        Exception.__init__(self, ": ".join(chain))
        self.chain = list(chain)
        self.status = status


def not_created():
    return VmErr("VM is not created", status=404)


def missing_config():
    return VmErr("VM config is missing", status=404)


def not_running():
    return VmErr("VM is not running")


def already_created():
    return VmErr("VM is already created")


def validation(msg):
    return VmErr("Failed to validate config", msg)


class HttpErr(Exception):
    def __init__(self, status, messages):
        Exception.__init__(self, ": ".join(messages or []))
        self.status = status
        self.messages = None if messages is None else list(messages)   # None: empty body


# --------------------------------------------------------------------------
# OpenAPI spec (loaded lazily, in the background)
# --------------------------------------------------------------------------

# Fields the spec marks required that CH's serde does not require (an Option in CH's structs):
# CH v53.0 stores a VmConfig without payload, and fails only at vm.boot (transcript "errors").
NOT_REQUIRED = {"VmConfig": {"payload"}}
# ... and the other way round: required by CH's serde, optional in the spec (v53.0 answers 400
# "missing field `id`", transcripts "hotplug", "snapshot-restore").
SERDE_REQUIRED = {"VmRemoveDevice": ("id",), "VmSnapshotConfig": ("destination_url",)}
RUST_INTS = {"int64": "u64", "int32": "u32", "int16": "u16", "int8": "u8", "uint8": "u8",
             "uint16": "u16", "uint32": "u32", None: "u32"}


def rust_type(schema):
    kind = schema.get("type")
    if kind == "integer":
        return RUST_INTS.get(schema.get("format"), "u64")
    return {"boolean": "a boolean", "string": "a string", "array": "a sequence",
            "number": "f64"}.get(kind, "a map")


def buffered_at(path):
    """CH v53.0 reports an error inside serial/console/debug_console at the end of that object
    (observed: `{"serial": {"mode": "Bogus"}}` -> column of its `}`), not at the bad value."""
    if len(path) > 1 and path[0] in ("serial", "console", "debug_console"):
        return path[:1]
    return path


def one_of(names):
    names = ["`%s`" % n for n in names]
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        return "%s or %s" % tuple(names)
    return "one of " + ", ".join(names)


def json_positions(text):
    """{path tuple: offset of the value's last character} for a valid JSON text: serde_json
    reports an error at the end of the value (of the object, for a missing field)."""
    import re
    scalar = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?|true|false|null")
    scanstring = json.decoder.scanstring
    pos = {}

    def skip(i):
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    def value(i, path):
        i = skip(i)
        c = text[i]
        if c in "{[":
            close = "}" if c == "{" else "]"
            i = skip(i + 1)
            n = 0
            while text[i] != close:
                if c == "{":
                    key, i = scanstring(text, i + 1)
                    i = skip(skip(i) + 1)
                    sub = path + (key,)
                else:
                    sub = path + (n,)
                    n += 1
                i = skip(value(i, sub))
                if text[i] == ",":
                    i = skip(i + 1)
            pos[path] = i
            return i + 1
        if c == '"':
            _s, j = scanstring(text, i + 1)
        else:
            j = scalar.match(text, i).end()
        pos[path] = j - 1
        return j

    value(0, ())
    return pos


def line_col(text, offset):
    line = text.count("\n", 0, offset) + 1
    return "line %d column %d" % (line, offset - text.rfind("\n", 0, offset))


def find_spec(name=SPEC_FILE, env=True):
    """CHSIM_SPEC (when env), else shared/ch-api/<name> in the closest directory above this one
    that has it (tests/support/chspec.py finds the specs for the tests the same way)."""
    override = os.environ.get("CHSIM_SPEC") if env else None
    if override:
        return override
    here = os.path.dirname(os.path.abspath(__file__))
    for start in (here, os.path.realpath(here)):
        d = start
        while True:
            cand = os.path.join(d, "shared", "ch-api", name)
            if os.path.isfile(cand):
                return cand
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
    return None


def warn_if_no_spec():
    """Without the spec (a plain clone has no ../shared), say so first: bodies go unchecked."""
    path = find_spec()
    if not path or not os.path.isfile(path):
        LOG.warn("request body validation is OFF: OpenAPI spec %s not found (set CHSIM_SPEC, "
                 "or put it in shared/ch-api/ above the repository)" % (path or SPEC_FILE))


class Spec:
    def __init__(self):
        self.ready = None
        self.doc = None
        self.validators = {}
        self.vcls = None
        self.fmt = None
        self.lock = _thread.allocate_lock()

    def start(self):
        with self.lock:
            if self.ready is not None:
                return
            self.ready = threading.Event()
        threading.Thread(target=self._load, name="spec-loader", daemon=True).start()

    def _load(self):
        try:
            path = find_spec()
            if not path or not os.path.isfile(path):
                return      # said at startup (warn_if_no_spec)
            import yaml
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            with open(path) as f:
                doc = yaml.load(f, Loader=loader)
            try:
                from openapi_schema_validator import OAS30Validator, oas30_format_checker
                self.vcls, self.fmt = OAS30Validator, oas30_format_checker
            except Exception:  # pragma: no cover - fallback
                import jsonschema
                self.vcls, self.fmt = jsonschema.Draft4Validator, None
            self.doc = doc
            LOG.debug("loaded OpenAPI spec %s" % path)
        except Exception as e:
            LOG.warn("cannot load OpenAPI spec: %s: request bodies will not be validated" % e)
            self.doc = None
        finally:
            self.ready.set()

    def resolve(self, schema):
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema and seen < 20:
            ref = schema["$ref"]
            node = self.doc
            for part in ref.lstrip("#/").split("/"):
                node = node[part]
            schema = node
            seen += 1
        return schema

    def validator(self, name):
        v = self.validators.get(name)
        if v is None:
            schema = {"components": self.doc["components"],
                      "$ref": "#/components/schemas/%s" % name}
            kwargs = {}
            if self.fmt is not None:
                kwargs["format_checker"] = self.fmt
            v = self.vcls(schema, **kwargs)
            self.validators[name] = v
        return v

    def check(self, name, body, raw=None):
        """Validate body (mutated: unknown fields and nulls of Option fields are dropped like
        serde). Returns a list of problems (empty if fine): with the raw text, serde_json's
        first error as CH reports it (``invalid type: string "big", expected u64 at line 1
        column 109``); serde checks types, enum variants and required fields, not the spec's
        minimum/maximum/formats."""
        self.start()
        self.ready.wait(30)
        if self.doc is None:
            return []
        schema = {"$ref": "#/components/schemas/%s" % name}
        self._walk(schema, body, [])
        found = []
        for e in self.validator(name).iter_errors(body):
            if e.validator not in ("type", "enum", "required"):
                continue
            path = tuple(e.absolute_path)
            if e.validator == "required":
                missing = [f for f in e.validator_value if f not in e.instance
                           and not (not path and f in NOT_REQUIRED.get(name, ()))]
                if missing:
                    found.append((path, "missing field `%s`" % missing[0]))
            elif e.validator == "enum":
                found.append((path, "unknown variant `%s`, expected %s"
                              % (e.instance, one_of(e.validator_value))))
            else:
                found.append((path, "invalid type: %s, expected %s"
                              % (json_type(e.instance), rust_type(e.schema))))
        for field in SERDE_REQUIRED.get(name, ()):
            if field not in body:
                found.append(((), "missing field `%s`" % field))
        if not found:
            return []
        if raw is None:
            return ["%s at `%s`" % (msg, fmt_path(path)) for path, msg in found[:1]]
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        pos = json_positions(text)
        found = [(buffered_at(path), msg) for path, msg in found]
        path, msg = min(found, key=lambda f: pos.get(f[0], len(text)))
        return ["%s at %s" % (msg, line_col(text, pos.get(path, len(text) - 1)))]

    def _walk(self, schema, value, path):
        """Drop what serde drops: unknown fields (CH's structs do not deny them: v53.0 accepts
        and ignores them, transcripts "errors", "hotplug", "resize") and nulls of Option fields."""
        schema = self.resolve(schema)
        if not isinstance(schema, dict):
            return
        if isinstance(value, dict):
            props = schema.get("properties")
            if props is None:
                return
            required = schema.get("required", [])
            for key in list(value):
                if key not in props:
                    del value[key]
                    continue
                sub = props[key]
                rsub = self.resolve(sub)
                if value[key] is None and key not in required and "default" not in sub \
                        and not (isinstance(rsub, dict) and "default" in rsub):
                    # serde: an Option<> field given as null is simply None.
                    del value[key]
                    continue
                self._walk(sub, value[key], path + [key])
        elif isinstance(value, list) and schema.get("type") == "array":
            for i, item in enumerate(value):
                self._walk(schema.get("items", {}), item, path + [i])


def fmt_path(path):
    out = ""
    for p in path:
        if isinstance(p, int):
            out += "[%d]" % p
        else:
            out += ("." if out else "") + str(p)
    return out


SPEC = Spec()

# --------------------------------------------------------------------------
# VmConfig defaults (what CH's serde fills in; echoed by vm.info)
# --------------------------------------------------------------------------

# Recorded from CH v53.0's vm.info (tests/simulator/transcripts): a false `iommu` is not echoed
# for disks, net, rng and console; `ip`/`mask` of a net entry only when given.
CPUS_DEFAULTS = {"kvm_hyperv": False, "max_phys_bits": 46, "nested": True,
                 "features": {"amx": False}, "core_scheduling": "Vm", "profile": "Host"}
MEMORY_DEFAULTS = {"mergeable": False, "hotplug_method": "Acpi", "shared": False,
                   "hugepages": False, "prefault": False, "reserve": False, "thp": True}
ZONE_DEFAULTS = {"mergeable": False, "shared": False, "hugepages": False,
                 "prefault": False, "reserve": False}
DISK_DEFAULTS = {"readonly": False, "direct": False, "num_queues": 1,
                 "queue_size": 128, "vhost_user": False, "pci_segment": 0,
                 "disable_io_uring": False, "disable_aio": False,
                 "backing_files": False, "sparse": True, "lock_granularity": "ByteRange"}
NET_DEFAULTS = {"num_queues": 2, "queue_size": 256, "vhost_user": False,
                "vhost_mode": "Client", "pci_segment": 0, "offload_tso": True,
                "offload_ufo": True, "offload_csum": True}
KIND_DEFAULTS = {
    "disks": DISK_DEFAULTS,
    "net": NET_DEFAULTS,
    "fs": {"num_queues": 1, "queue_size": 1024, "pci_segment": 0},
    "pmem": {"iommu": False, "discard_writes": False, "pci_segment": 0},
    "vdpa": {"num_queues": 1, "iommu": False, "pci_segment": 0},
    "devices": {"iommu": False, "pci_segment": 0},
    "user_devices": {"pci_segment": 0},
    "generic-vhost-user": {"pci_segment": 0},
    "vsock": {"iommu": False, "pci_segment": 0},
}
# config key -> auto id prefix, in CH's device creation order
ID_PREFIX = [("disks", "_disk"), ("net", "_net"), ("fs", "_fs"), ("pmem", "_pmem"),
             ("vsock", "_vsock"), ("generic-vhost-user", "_generic_vhost_user"),
             ("vdpa", "_vdpa"), ("devices", "_vfio"), ("user_devices", "_vfio_user")]
LIST_KINDS = ("disks", "net", "fs", "pmem", "generic-vhost-user", "vdpa", "devices",
              "user_devices")
TOP_ORDER = ["cpus", "memory", "payload", "rate_limit_groups", "disks", "net", "rng",
             "balloon", "fs", "generic-vhost-user", "pmem", "serial", "console",
             "debug_console", "devices", "user_devices", "vdpa", "vsock", "numa", "iommu",
             "watchdog", "rtc", "pvpanic", "pci_segments", "platform", "tpm",
             "landlock_enable", "landlock_rules"]


def fill(d, defaults):
    for k, v in defaults.items():
        if k not in d:
            d[k] = deepcopy_json(v) if isinstance(v, (dict, list)) else v


def normalize_device(kind, dev):
    fill(dev, KIND_DEFAULTS.get(kind, {}))
    if kind in ("disks", "net") and dev.get("iommu") is False:
        del dev["iommu"]
    if kind == "net":
        if "mac" not in dev:
            dev["mac"] = random_mac()
    return dev


def normalize_config(cfg):
    cfg = deepcopy_json(cfg)
    cpus = cfg.setdefault("cpus", {"boot_vcpus": 1, "max_vcpus": 1})
    fill(cpus, CPUS_DEFAULTS)
    mem = cfg.setdefault("memory", {"size": DEFAULT_MEMORY})
    fill(mem, MEMORY_DEFAULTS)
    for z in mem.get("zones") or []:
        fill(z, ZONE_DEFAULTS)
    for kind in LIST_KINDS:
        for dev in cfg.get(kind) or []:
            normalize_device(kind, dev)
    if cfg.get("vsock") is not None:
        normalize_device("vsock", cfg["vsock"])
    rng = cfg.setdefault("rng", {"src": "/dev/urandom"})
    fill(rng, {"pci_segment": 0})
    if cfg.get("balloon") is not None:
        fill(cfg["balloon"], {"pci_segment": 0, "deflate_on_oom": False,
                              "free_page_reporting": False})
    cfg.setdefault("serial", {"mode": "Null"})
    console = cfg.setdefault("console", {"mode": "Tty"})
    fill(console, {"pci_segment": 0})
    for dev in (rng, console):
        if dev.get("iommu") is False:
            del dev["iommu"]
    cfg.setdefault("debug_console", {"mode": "Off", "iobase": 233})
    for k in ("iommu", "watchdog", "pvpanic", "landlock_enable"):
        cfg.setdefault(k, False)
    if cfg.get("platform") is not None:
        fill(cfg["platform"], {"num_pci_segments": 1})
    ordered = {}
    for k in TOP_ORDER:
        if k in cfg and cfg[k] is not None:
            ordered[k] = cfg[k]
    for k in cfg:
        if k not in ordered and cfg[k] is not None:
            ordered[k] = cfg[k]
    return ordered


def all_ids(cfg):
    ids = []
    for kind in LIST_KINDS:
        for dev in cfg.get(kind) or []:
            if dev.get("id"):
                ids.append(dev["id"])
    if cfg.get("vsock") and cfg["vsock"].get("id"):
        ids.append(cfg["vsock"]["id"])
    for z in (cfg.get("memory") or {}).get("zones") or []:
        if z.get("id"):
            ids.append(z["id"])
    return ids


def validate_config(cfg):
    """A subset of CH's VmConfig::validate()."""
    cpus = cfg["cpus"]
    if cpus["boot_vcpus"] > cpus["max_vcpus"]:
        raise validation("Max CPUs (%d) lower than boot CPUs (%d)"
                         % (cpus["max_vcpus"], cpus["boot_vcpus"]))
    payload = cfg.get("payload") or {}
    if not (payload.get("kernel") or payload.get("firmware") or payload.get("igvm")):
        raise VmErr("Failed to validate config", "Payload configuration is not bootable",
                    "No bootitem provided: neither firmware nor kernel")
    mem = cfg["memory"]
    if cfg.get("balloon") and cfg["balloon"]["size"] >= mem["size"]:
        raise validation("Balloon size (%d) must be smaller than the guest memory size (%d)"
                         % (cfg["balloon"]["size"], mem["size"]))
    shared = mem.get("shared") or mem.get("hugepages")
    vhost = any(d.get("vhost_user") for d in (cfg.get("disks") or []) + (cfg.get("net") or []))
    if (vhost or cfg.get("fs") or cfg.get("generic-vhost-user")) and not shared:
        raise validation("Using vhost-user requires using shared memory or huge pages")
    for n in cfg.get("net") or []:
        q = n.get("num_queues", 2)
        if q < 2 or q % 2:
            raise validation("Number of queues (%d) for virtio-net must be even and at least 2" % q)
    if cfg["serial"].get("mode") == "Tty" and cfg["console"].get("mode") == "Tty":
        raise validation("Console mode tty specified for both serial and console")
    seen = set()
    for i in all_ids(cfg):
        if i in seen:
            raise validation("Identifier %s is not unique" % i)
        seen.add(i)


# --------------------------------------------------------------------------
# host resources: disks, taps, sockets
# --------------------------------------------------------------------------

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_MULTI_QUEUE = 0x0100
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def lock_file(fd, exclusive):
    ltype = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
    cmd = getattr(fcntl, "F_OFD_SETLK", None)
    if cmd is not None:
        fcntl.fcntl(fd, cmd, struct.pack("hhqqi4x", ltype, 0, 0, 0, 0))
    else:  # pragma: no cover
        fcntl.lockf(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)


def open_disk(disk):
    """Returns a list of fds to hold while the VM lives."""
    if disk.get("vhost_user"):
        sock = disk.get("vhost_socket")
        check_socket(sock, "Cannot create virtio-blk device",
                     "Failed to connect to vhost-user backend %s" % sock)
        return []
    path = disk.get("path")
    if not path:
        raise VmErr("Error from device manager", "No disk path was specified when one was expected")
    ro = bool(disk.get("readonly"))
    try:
        fd = os.open(path, (os.O_RDONLY if ro else os.O_RDWR) | os.O_CLOEXEC)
    except OSError as e:
        raise VmErr("Error from device manager", "Cannot open disk path",
                    "I/O error (path=%s op=open)" % path, oserr(e))
    try:
        lock_file(fd, not ro)
    except OSError:
        os.close(fd)
        raise VmErr("Error from device manager", "Cannot lock images of all block devices",
                    "Failed to get %s lock for disk image: %s" % ("Read" if ro else "Write", path),
                    "The file is already locked")
    return [fd]


def check_path(path, what, *chain):
    if not path or not os.path.exists(path):
        raise VmErr("Error from device manager", *(list(chain) + [
            "%s %s: %s" % (what, path, oserr(OSError(errno.ENOENT, "")))]))


def check_socket(path, *chain):
    try:
        st = os.stat(path or "")
    except OSError as e:
        raise VmErr("Error from device manager", *(list(chain) + [oserr(e)]))
    if not stat.S_ISSOCK(st.st_mode):
        raise VmErr("Error from device manager", *(list(chain) + [
            "%s is not a unix socket: %s" % (path, oserr(OSError(errno.ECONNREFUSED, "")))]))


def open_tap(name, num_queues):
    """Open an existing tap like CH does; returns the queue-pair fds."""
    if len(name.encode()) > 15:
        raise VmErr("Error from device manager", "Cannot create virtio-net device",
                    "Failed to open taps", "Open tap device failed",
                    "Invalid interface name %r" % name)
    try:
        socket.if_nametoindex(name)
    except OSError:
        raise VmErr("Error from device manager", "Cannot create virtio-net device",
                    "Failed to open taps", "Open tap device failed",
                    "Tap interface %s does not exist (chsim only opens existing taps): %s"
                    % (name, oserr(OSError(errno.ENODEV, ""))))
    pairs = max(1, num_queues // 2)
    flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (IFF_MULTI_QUEUE if pairs > 1 else 0)
    fds = []
    try:
        for _pair in range(pairs):
            try:
                fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as e:
                raise VmErr("Error from device manager", "Cannot create virtio-net device",
                            "Failed to open taps", "Open tap device failed",
                            "Couldn't open /dev/net/tun: %s" % oserr(e))
            fds.append(fd)
            try:
                fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
            except OSError as e:
                raise VmErr("Error from device manager", "Cannot create virtio-net device",
                            "Failed to open taps", "Open tap device failed",
                            "Unable to configure tap interface", oserr(e))
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                res = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH22x", name.encode(), 0))
                cur = struct.unpack("16sH22x", res)[1]
                fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", name.encode(), cur | IFF_UP))
            finally:
                s.close()
        except OSError as e:
            raise VmErr("Error from device manager", "Cannot create virtio-net device",
                        "Failed to open taps", "Open tap device failed",
                        "Unable to enable tap interface %s: %s" % (name, oserr(e)))
    except Exception:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def tap_mac(name):
    """The MAC address of interface name (SIOCGIFHWADDR), or None."""
    if not name:
        return None
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        res = fcntl.ioctl(s, 0x8927, struct.pack("16sH14s", name.encode()[:15], 0, b""))
    except OSError:
        return None
    finally:
        s.close()
    return ":".join("%02x" % b for b in struct.unpack("16sH14s", res)[2][:6])


def url_to_path(url, *chain):
    if not isinstance(url, str) or not url.startswith("file://"):
        raise VmErr(*(list(chain) + ["Could not extract path from URL: %s" % url]))
    return url[len("file://"):]


# --------------------------------------------------------------------------
# serial / console backends
# --------------------------------------------------------------------------


class ConsoleBackend:
    def __init__(self, kind, cfg):
        self.kind = kind  # "serial" | "console"
        self.mode = cfg.get("mode")
        self.cfg = cfg
        self.fds = []
        self.path = None
        self.listener = None
        self.clients = []
        self.buffer = b""
        self.lock = threading.Lock()

    def prepare(self):
        mode = self.mode
        if mode == "File":
            path = self.cfg.get("file")
            if not path:
                raise VmErr("Error creating console devices",
                            "No file path given for %s mode File" % self.kind)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise VmErr("Error creating console devices",
                            "Error opening %s output file %s: %s" % (self.kind, path, oserr(e)))
            self.fds = [fd]
            self.path = path
        elif mode == "Pty":
            try:
                master, slave = os.openpty()
            except OSError as e:
                raise VmErr("Error creating console devices", "Cannot create pty: %s" % oserr(e))
            os.set_blocking(master, False)
            self.fds = [master, slave]
            self.path = os.ttyname(slave)
            self.cfg["file"] = self.path
        elif mode == "Socket":
            path = self.cfg.get("socket")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.bind(path)
                s.listen(8)
            except OSError as e:
                s.close()
                raise VmErr("Error creating console devices",
                            "Error creating %s socket %s: %s" % (self.kind, path, oserr(e)))
            self.listener = s
            self.path = path
            threading.Thread(target=self._accept, name="%s-socket" % self.kind,
                             daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _addr = self.listener.accept()
            except OSError:
                return
            with self.lock:
                try:
                    c.sendall(self.buffer)
                except OSError:
                    pass
                self.clients.append(c)

    def write(self, data):
        mode = self.mode
        try:
            if mode == "File" and self.fds:
                os.write(self.fds[0], data)
            elif mode == "Pty" and self.fds:
                os.write(self.fds[0], data.replace(b"\n", b"\r\n"))
            elif mode == "Tty":
                os.write(1, data)
            elif mode == "Socket":
                with self.lock:
                    self.buffer += data
                    for c in list(self.clients):
                        try:
                            c.sendall(data)
                        except OSError:
                            self.clients.remove(c)
        except OSError:
            pass

    def close(self):
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []
        if self.listener is not None:
            try:
                self.listener.close()
            except OSError:
                pass
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self.listener = None
        for c in self.clients:
            try:
                c.close()
            except OSError:
                pass
        self.clients = []


# --------------------------------------------------------------------------
# a live (booted or restored) VM
# --------------------------------------------------------------------------

BUILTIN_SLOT_IDS = ("__console", "__rng", "__balloon", "__watchdog", "__pvpanic")


class LiveVm:
    _gen = 0

    def __init__(self):
        LiveVm._gen += 1
        self.gen = LiveVm._gen
        self.state = "Running"
        self.boot_time = time.time()
        self.started = time.monotonic()
        self.fds = {}        # device id -> [fds]
        self.sockets = {}    # device id -> (socket, path)
        self.slots = {}      # device id -> pci slot
        self.id_counter = 0
        self.boot_ids = set()
        self.snapshot_counter = 0
        self.restored_from = None
        self.power_pending = False
        self.boot_ram = 0                  # memory.size at boot: the hotplug region starts there
        self.plugged_ram = 0               # the largest RAM size plugged so far
        self.vcpus_pending_removal = False
        self.boot_disks = set()            # disks present at boot (32-bit BARs)
        self.pending_removal = set()       # ids removed from the config, not yet ejected

    def next_name(self, prefix):
        while True:
            name = "%s%d" % (prefix, self.id_counter)
            self.id_counter += 1
            if name not in self.boot_ids and name not in self.slots:
                return name

    def alloc_slot(self, dev_id):
        used = set(self.slots.values())
        for s in range(1, 32):
            if s not in used:
                self.slots[dev_id] = s
                return s
        raise VmErr("Error from device manager", "No free PCI slot on segment 0")

    def release_device(self, dev_id):
        for fd in self.fds.pop(dev_id, []):
            try:
                os.close(fd)
            except OSError:
                pass
        sock = self.sockets.pop(dev_id, None)
        if sock:
            try:
                sock[0].close()
            except OSError:
                pass
            try:
                os.unlink(sock[1])
            except OSError:
                pass
        self.slots.pop(dev_id, None)

    def release(self):
        for dev_id in list(self.fds) + list(self.sockets):
            self.release_device(dev_id)
        self.slots.clear()

    def uptime(self):
        return time.monotonic() - self.started

    def device_tree(self):
        """vm.info's device_tree as CH v53.0 shows it (transcripts): the serial port and the
        IOAPIC, and for every virtio device a node `<id>` whose parent is its PCI transport
        `_virtio-pci-<id>` (one 512 KiB BAR: 32-bit for disks present at boot, which firmware
        may boot from; 64-bit otherwise; `pci_bdf` on the transport only). The BAR addresses
        are made up (the transcripts normalize them)."""
        tree = {"__serial": {"id": "__serial", "resources": [], "children": []},
                "__ioapic": {"id": "__ioapic", "resources": [], "children": []}}
        n32 = n64 = 0
        for dev_id, slot in sorted(self.slots.items(), key=lambda kv: kv[1]):
            pci = "_virtio-pci-%s" % dev_id
            if dev_id in self.boot_disks:
                kind, base = "Mmio32", 0xC0000000 + n32 * 0x80000
                n32 += 1
            else:
                kind, base = "Mmio64", 0x3FFFFFF80000 - n64 * 0x80000
                n64 += 1
            tree[pci] = {"id": pci, "resources": [{"PciBar": {
                "index": 0, "base": base, "size": 0x80000, "type_": kind,
                "prefetchable": False}}], "children": [dev_id], "pci_bdf": bdf(slot)}
            tree[dev_id] = {"id": dev_id, "resources": [], "parent": pci, "children": []}
        return tree


# --------------------------------------------------------------------------
# the VMM
# --------------------------------------------------------------------------

ACTION_MSG = {
    "vm.create": "The VM could not be created",
    "vm.boot": "The VM could not boot",
    "vm.pause": "The VM could not be paused",
    "vm.resume": "The VM could not resume",
    "vm.shutdown": "The VM could not shutdown",
    "vm.reboot": "The VM could not reboot",
    "vm.power-button": "Error triggering power button",
    "vm.delete": "The VM could not be deleted",
    "vm.info": "The VM info is not available",
    "vm.counters": "The VM info is not available",
    "vm.snapshot": "The VM could not be snapshotted",
    "vm.restore": "The VM could not be restored",
    "vmm.shutdown": "The VMM could not shutdown",
    "vm.resize": "The VM could not be resized",
    "vm.resize-disk": "The disk could not be resized",
    "vm.resize-zone": "The memory zone could not be resized",
    "vm.add-device": "The device could not be added to the VM",
    "vm.add-user-device": "The user device could not be added to the VM",
    "vm.remove-device": "The device could not be removed from the VM",
    "vm.add-disk": "The disk could not be added to the VM",
    "vm.add-fs": "The fs could not be added to the VM",
    "vm.add-generic-vhost-user":
        "The generic vhost-user device could not be added to the VM",
    "vm.add-pmem": "The pmem device could not be added to the VM",
    "vm.add-net": "The network device could not be added to the VM",
    "vm.add-vdpa": "The vDPA device could not be added to the VM",
    "vm.add-vsock": "The vsock device could not be added to the VM",
    "vm.receive-migration": "Error starting migration receiver",
    "vm.send-migration": "Error starting migration sender",
    "vm.nmi": "Error triggering NMI",
}

# endpoint -> (method, body): body None = no body allowed, "any" = ignored,
# otherwise the spec schema name of the required body.
ROUTES = {
    "vmm.ping": ("GET", "any"),
    "vm.info": ("GET", "any"),
    "vm.counters": ("GET", "any"),
    "vmm.shutdown": ("PUT", "any"),
    "vm.create": ("PUT", "VmConfig"),
    "vm.delete": ("PUT", None),
    "vm.boot": ("PUT", None),
    "vm.pause": ("PUT", None),
    "vm.resume": ("PUT", None),
    "vm.shutdown": ("PUT", None),
    "vm.reboot": ("PUT", None),
    "vm.power-button": ("PUT", None),
    "vm.nmi": ("PUT", None),
    "vm.resize": ("PUT", "VmResize"),
    "vm.resize-disk": ("PUT", "VmResizeDisk"),
    "vm.resize-zone": ("PUT", "VmResizeZone"),
    "vm.add-device": ("PUT", "DeviceConfig"),
    "vm.add-user-device": ("PUT", "VmAddUserDevice"),
    "vm.remove-device": ("PUT", "VmRemoveDevice"),
    "vm.add-disk": ("PUT", "DiskConfig"),
    "vm.add-fs": ("PUT", "FsConfig"),
    "vm.add-generic-vhost-user": ("PUT", "GenericVhostUserConfig"),
    "vm.add-pmem": ("PUT", "PmemConfig"),
    "vm.add-net": ("PUT", "NetConfig"),
    "vm.add-vsock": ("PUT", "VsockConfig"),
    "vm.add-vdpa": ("PUT", "VdpaConfig"),
    "vm.snapshot": ("PUT", "VmSnapshotConfig"),
    "vm.restore": ("PUT", "RestoreConfig"),
    "vm.receive-migration": ("PUT", "ReceiveMigrationData"),
    "vm.send-migration": ("PUT", "SendMigrationData"),
    # vm.coredump needs CH's guest_debug feature, absent from release builds: 404.
}

ADD_KINDS = {
    "vm.add-disk": "disks",
    "vm.add-net": "net",
    "vm.add-fs": "fs",
    "vm.add-pmem": "pmem",
    "vm.add-vsock": "vsock",
    "vm.add-vdpa": "vdpa",
    "vm.add-device": "devices",
    "vm.add-user-device": "user_devices",
    "vm.add-generic-vhost-user": "generic-vhost-user",
}

BANNER = (
    "Linux version 6.12.0-chsim (chsim@cloud-hypervisor) #1 SMP PREEMPT_DYNAMIC "
    "simulated by chsim (cloud-hypervisor %(build)s)\n"
    "Command line: %(cmdline)s\n"
    "smpboot: Allowing %(max)d CPUs, %(boot)d booted\n"
    "Memory: %(mem)dK available\n"
    "Run /sbin/init as init process\n"
    "\n"
    "chsim login: "
)


class Vmm:
    def __init__(self, no_shutdown=False):
        self.lock = threading.RLock()
        self.config = None
        self.live = None
        self.consoles = None
        self.no_shutdown = no_shutdown
        self.version, self.build_version = version_info()

    # ---------------- consoles ----------------

    def _prepare_consoles(self):
        if self.consoles is not None:
            return
        backends = []
        try:
            for kind in ("serial", "console"):
                b = ConsoleBackend(kind, self.config[kind])
                b.prepare()
                backends.append(b)
        except Exception:
            for b in backends:
                b.close()
            raise
        self.consoles = backends

    def _close_consoles(self):
        if self.consoles:
            for b in self.consoles:
                b.close()
        self.consoles = None

    def _banner(self):
        if not self.consoles:
            return
        cfg = self.config
        text = BANNER % {
            "build": self.build_version,
            "cmdline": (cfg.get("payload") or {}).get("cmdline", ""),
            "max": cfg["cpus"]["max_vcpus"], "boot": cfg["cpus"]["boot_vcpus"],
            "mem": cfg["memory"]["size"] // 1024}
        for b in self.consoles:
            b.write(text.encode())

    # ---------------- bring-up / tear-down ----------------

    def _open_device(self, live, kind, dev):
        dev_id = dev["id"]
        if kind == "disks":
            live.fds[dev_id] = open_disk(dev)
        elif kind == "net":
            if dev.get("vhost_user"):
                check_socket(dev.get("vhost_socket"), "Cannot create virtio-net device",
                             "Failed to connect to vhost-user backend %s" % dev.get("vhost_socket"))
            elif dev.get("tap"):
                live.fds[dev_id] = open_tap(dev["tap"], dev.get("num_queues", 2))
            # (no tap: CH would create one itself; chsim does not open anything)
            if "host_mac" not in dev:
                # CH v53.0 fills host_mac in when it creates the device (boot, hot-add), not at
                # vm.create (transcript "net"); chsim takes the tap's MAC (a guess: the value
                # is normalized in the transcripts)
                dev["host_mac"] = tap_mac(dev.get("tap")) or random_mac()
        elif kind == "fs":
            check_socket(dev.get("socket"), "Cannot create virtio-fs device",
                         "Failed to connect to vhost-user backend %s" % dev.get("socket"))
        elif kind == "generic-vhost-user":
            check_socket(dev.get("socket"), "Cannot create generic vhost-user device",
                         "Failed to connect to vhost-user backend %s" % dev.get("socket"))
        elif kind == "user_devices":
            check_socket(dev.get("socket"), "Failed to create vfio-user client",
                         "Failed to connect to %s" % dev.get("socket"))
        elif kind == "pmem":
            path = dev.get("file")
            try:
                fd = os.open(path, (os.O_RDONLY if dev.get("discard_writes") else os.O_RDWR)
                             | os.O_CLOEXEC)
            except OSError as e:
                raise VmErr("Error from device manager", "Cannot create virtio-pmem device",
                            "Cannot open pmem file %s: %s" % (path, oserr(e)))
            live.fds[dev_id] = [fd]
        elif kind == "vdpa":
            check_path(dev.get("path"), "Cannot open vDPA device", "Cannot create vDPA device")
        elif kind == "devices":
            check_path(dev.get("path"), "Cannot open VFIO device",
                       "Failed to create VFIO device")
        elif kind == "vsock":
            path = dev.get("socket")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.bind(path)
                s.listen(8)
            except OSError as e:
                s.close()
                raise VmErr("Error from device manager", "Cannot create virtio-vsock device",
                            "Error binding vsock Unix socket %s: %s" % (path, oserr(e)))
            live.sockets[dev_id] = (s, path)

    def _devices(self, cfg):
        """(kind, dev) in CH's creation order."""
        for kind, _prefix in ID_PREFIX:
            if kind == "vsock":
                if cfg.get("vsock"):
                    yield kind, cfg["vsock"]
            else:
                for dev in cfg.get(kind) or []:
                    yield kind, dev

    def _bring_up(self, cfg, restoring=False):
        """Validate and open everything a VM needs; returns a LiveVm."""
        validate_config(cfg)
        payload = cfg.get("payload") or {}
        if not restoring:
            for key, what in (("kernel", "kernel"), ("firmware", "firmware"),
                              ("initramfs", "initramfs"), ("igvm", "igvm")):
                path = payload.get(key)
                if not path:
                    continue
                try:
                    os.close(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
                except OSError as e:
                    if key == "firmware":
                        raise VmErr("Error manipulating firmware file %s" % path, oserr(e))
                    raise VmErr("Cannot open %s file" % what, oserr(e))
        live = LiveVm()
        live.boot_ids = set(all_ids(cfg))
        live.boot_ram = live.plugged_ram = cfg["memory"]["size"]
        try:
            for kind, prefix in ID_PREFIX:
                if kind == "vsock":
                    devs = [cfg["vsock"]] if cfg.get("vsock") else []
                else:
                    devs = cfg.get(kind) or []
                for dev in devs:
                    if not dev.get("id"):
                        dev["id"] = live.next_name(prefix)
            for kind, dev in self._devices(cfg):
                if kind == "disks" and not dev.get("image_type") and not restoring:
                    LOG.warn("Disk %s: image_type not set, autodetecting the image format "
                             "(deprecated, set image_type)" % dev.get("path"))
                self._open_device(live, kind, dev)
            order = []
            if cfg["console"].get("mode") != "Off":
                order.append("__console")
            for kind, dev in self._devices(cfg):
                if kind in ("disks", "net"):
                    order.append(dev["id"])
                if kind == "disks":
                    live.boot_disks.add(dev["id"])
            order.append("__rng")
            for kind, dev in self._devices(cfg):
                if kind not in ("disks", "net", "devices", "user_devices"):
                    order.append(dev["id"])
            if cfg.get("balloon"):
                order.append("__balloon")
            if cfg.get("watchdog"):
                order.append("__watchdog")
            for kind, dev in self._devices(cfg):
                if kind in ("devices", "user_devices"):
                    order.append(dev["id"])
            if cfg.get("pvpanic"):
                order.append("__pvpanic")
            for dev_id in order:
                live.alloc_slot(dev_id)
        except Exception:
            live.release()
            raise
        return live

    def _stop_live(self, event=True):
        live = self.live
        if live is None:
            return
        self.live = None
        live.release()
        self._close_consoles()
        if event:
            EVENTS.emit("vm", "shutdown")

    def _boot(self):
        if self.live is not None:
            raise already_created()
        EVENTS.emit("vm", "booting")
        if self.config is None:
            raise missing_config()
        self._prepare_consoles()
        live = self._bring_up(self.config)
        self.live = live
        self._banner()
        after = env_float("CHSIM_GUEST_POWEROFF", -1.0)
        if after >= 0:
            # a guest that powers itself off (the real_ch test guest with `poweroff`)
            t = threading.Timer(after, self._guest_poweroff, args=(live.gen,))
            t.name = "vcpu0"
            t.daemon = True
            t.start()
        LOG.info("VM booted (%d vCPUs, %d MiB)" % (
            self.config["cpus"]["boot_vcpus"], self.config["memory"]["size"] // MiB))
        EVENTS.emit("vm", "booted")

    def _delete(self):
        if self.config is None:
            return
        if self.live is not None:
            self._stop_live()
        self._close_consoles()
        self.config = None
        EVENTS.emit("vm", "deleted")

    def memory_actual_size(self):
        mem = self.config["memory"]
        size = mem["size"] + sum(z.get("size", 0) for z in mem.get("zones") or [])
        if self.live is None:
            return size
        size += mem.get("hotplugged_size") or 0
        if self.config.get("balloon") and not env_flag("CHSIM_NO_BALLOON_DRIVER"):
            # the guest's balloon driver inflates to the requested size
            size -= self.config["balloon"].get("size", 0)
        return max(size, 0)

    # ---------------- API actions ----------------

    def do_ping(self, _body):
        return 200, {"build_version": self.build_version, "version": self.version,
                     "pid": os.getpid(), "features": ["io_uring", "kvm"]}

    def do_info(self, _body):
        if self.config is None:
            raise not_created()
        info = {"config": deepcopy_json(self.config),
                "state": self.live.state if self.live else "Created",
                "memory_actual_size": self.memory_actual_size()}
        if self.live is not None:
            info["device_tree"] = self.live.device_tree()
        return 200, info

    def do_counters(self, _body):
        if self.live is None:
            raise not_running()
        up = self.live.uptime()
        out = {}
        for kind, dev in self._devices(self.config):
            if kind == "disks":
                out[dev["id"]] = {"read_bytes": int(up * 4096) * 16, "read_ops": int(up * 16),
                                  "write_bytes": int(up * 4096) * 2, "write_ops": int(up * 2),
                                  "read_latency_min": 1000, "read_latency_max": 90000,
                                  "read_latency_avg": 12000, "write_latency_min": 1500,
                                  "write_latency_max": 120000, "write_latency_avg": 15000}
            elif kind == "net":
                out[dev["id"]] = {"rx_bytes": int(up * 1500) * 3, "rx_frames": int(up * 3),
                                  "tx_bytes": int(up * 1500), "tx_frames": int(up)}
        return 200, out

    def do_create(self, body):
        if self.config is not None:
            raise already_created()
        self.config = normalize_config(body)
        # Like CH, the config stays stored even if the console devices fail.
        self._prepare_consoles()
        LOG.info("VM created")
        return 204, None

    def do_boot(self, _body):
        self._boot()
        return 204, None

    def do_pause(self, _body):
        live = self.live
        if live is None:
            raise not_running()
        if live.state != "Running":
            raise VmErr("Cannot pause VM",
                        "Failed to pause migratable component", "Invalid transition: "
                        "InvalidStateTransition(%s, Paused)" % live.state)
        EVENTS.emit("vm", "pausing")
        live.state = "Paused"
        EVENTS.emit("vm", "paused")
        return 204, None

    def do_resume(self, _body):
        live = self.live
        if live is None:
            raise not_running()
        if live.state != "Paused":
            raise VmErr("Cannot resume VM",
                        "Failed to resume migratable component", "Invalid transition: "
                        "InvalidStateTransition(%s, Running)" % live.state)
        EVENTS.emit("vm", "resuming")
        live.state = "Running"
        EVENTS.emit("vm", "resumed")
        if live.power_pending:
            live.power_pending = False
            self._schedule_poweroff(live)
        return 204, None

    def do_shutdown(self, _body):
        if self.live is None:
            raise not_running()
        self._stop_live()
        LOG.info("VM shut down")
        return 204, None

    def do_reboot(self, _body):
        if self.live is None:
            raise not_created()
        EVENTS.emit("vm", "rebooting")
        self.live.release()
        self.live = None
        self._close_consoles()
        try:
            self._prepare_consoles()
            self.live = self._bring_up(self.config)
        except Exception:
            self._close_consoles()
            raise
        self._banner()
        EVENTS.emit("vm", "rebooted")
        return 204, None

    def do_power_button(self, _body):
        live = self.live
        if live is None:
            raise not_running()
        if env_flag("CHSIM_IGNORE_ACPI"):
            LOG.info("ACPI power button pressed: the guest ignores it (CHSIM_IGNORE_ACPI)")
        elif live.state == "Paused":
            LOG.info("ACPI power button pressed while paused: handled on resume")
            live.power_pending = True
        else:
            self._schedule_poweroff(live)
        return 204, None

    def _schedule_poweroff(self, live):
        delay = env_float("CHSIM_ACPI_DELAY", 0.0)
        LOG.info("ACPI power button pressed: guest powers off in %.3fs" % delay)
        t = threading.Timer(max(delay, 0.0) + 0.01, self._guest_poweroff, args=(live.gen,))
        t.name = "vcpu0"
        t.daemon = True
        t.start()

    def _guest_poweroff(self, gen):
        with self.lock:
            live = self.live
            if live is None or live.gen != gen:
                return
            if live.state == "Paused":
                live.power_pending = True
                return
            LOG.info("VM guest exit event: the guest powered off")
            if self.no_shutdown:
                self._stop_live()
                return
            self._delete()
            EVENTS.emit("vmm", "shutdown")
        request_exit(0, "guest powered off")

    def do_nmi(self, _body):
        if self.live is None:
            raise not_running()
        LOG.info("NMI injected")
        return 204, None

    def do_delete(self, _body):
        self._delete()
        return 204, None

    def do_vmm_shutdown(self, _body):
        self._delete()
        EVENTS.emit("vmm", "shutdown")
        # CH answers vmm.shutdown with 200 and an empty body.
        return 200, b""

    def do_resize(self, body):
        if self.config is None:
            raise not_created()
        cfg = self.config
        vcpus = body.get("desired_vcpus")
        ram = body.get("desired_ram")
        balloon = body.get("desired_balloon")
        if self.live is None:
            # Cold resize: CH just rewrites the stored config.
            if vcpus is not None:
                cfg["cpus"]["boot_vcpus"] = vcpus
            if ram is not None:
                cfg["memory"]["size"] = ram
            if balloon is not None and cfg.get("balloon"):
                cfg["balloon"]["size"] = balloon
            return 204, None
        # Live resize as CH v53.0 does it (transcript "resize"): the new vCPU count and RAM size
        # are written to cpus.boot_vcpus and memory.size (hotplugged_size stays unset);
        # memory_actual_size follows memory.size minus what the balloon holds.
        live = self.live
        mem = cfg["memory"]
        if vcpus is not None:
            if live.vcpus_pending_removal:
                # vCPUs asked to go are still there (the guest did not eject them): CH answers
                # 429 with no error chain.
                raise HttpErr(429, ["Too Many Requests"])
            if vcpus > cfg["cpus"]["max_vcpus"]:
                raise VmErr("Error from CPU manager", "Requested vCPUs exceed maximum")
            if vcpus == 0:
                raise VmErr("Error from CPU manager", "Requested zero vCPUs")
        if ram is not None and ram > live.plugged_ram:
            # ACPI memory is never unplugged: the hotplug region is used up to the largest
            # size plugged so far; a smaller desired_ram is accepted and only rewrites the config.
            if (ram - live.plugged_ram) % (128 << 20):
                # an ACPI DIMM is a multiple of 128 MiB (seen with CH v53.0.0: 128M + 100M)
                raise VmErr("Memory manager error", "The requested hotplug memory addition is not a valid size")
            if ram > live.boot_ram + (mem.get("hotplug_size") or 0):
                raise VmErr("Memory manager error", "Not enough space in the hotplug RAM region")
        if balloon is not None and not cfg.get("balloon"):
            raise VmErr("Error from device manager",
                        "Missing virtio-balloon, can't proceed as expected")
        if vcpus is not None:
            if vcpus < cfg["cpus"]["boot_vcpus"] and env_flag("CHSIM_IGNORE_ACPI"):
                live.vcpus_pending_removal = True   # the guest never acknowledges the eject
            cfg["cpus"]["boot_vcpus"] = vcpus
        if ram is not None:
            live.plugged_ram = max(live.plugged_ram, ram)
            mem["size"] = ram
        if balloon is not None:
            cfg["balloon"]["size"] = balloon
        EVENTS.emit("vm", "resized")
        return 204, None

    def do_resize_disk(self, body):
        if self.config is None:
            raise not_created()
        if self.live is None:
            raise VmErr("Cannot resize disk")
        dev_id = body.get("id")
        size = body.get("desired_size")
        for disk in self.config.get("disks") or []:
            if disk.get("id") == dev_id:
                fds = self.live.fds.get(dev_id) or []
                if not fds or disk.get("readonly"):
                    raise VmErr("Error from device manager",
                                "Cannot resize disk %s: disk is read-only" % dev_id)
                try:
                    cur = os.fstat(fds[0]).st_size
                    if size is not None and size < cur:
                        raise VmErr("Error from device manager",
                                    "Cannot resize disk %s: shrinking (%d -> %d bytes) is not "
                                    "supported" % (dev_id, cur, size))
                    if size is not None:
                        os.ftruncate(fds[0], size)
                except OSError as e:
                    raise VmErr("Error from device manager",
                                "Cannot resize disk %s: %s" % (dev_id, oserr(e)))
                return 204, None
        raise VmErr("Error from device manager", "Unknown device ID: %s" % dev_id)

    def do_resize_zone(self, body):
        if self.config is None:
            raise not_created()
        for z in self.config["memory"].get("zones") or []:
            if z.get("id") == body.get("id"):
                if self.live is None:
                    z["size"] = body.get("desired_ram", z["size"])
                    return 204, None
                raise VmErr("Memory manager error",
                            "Memory zone resizing is not simulated by chsim")
        LOG.error("Could not find the memory zone %s for the resize" % body.get("id"))
        raise VmErr("Failed resizing a memory zone")

    def do_add(self, endpoint, body):
        kind = ADD_KINDS[endpoint]
        if self.config is None:
            raise not_created()
        cfg = self.config
        dev = normalize_device(kind, deepcopy_json(body))
        # Validate the change on a clone of the config, like CH.
        clone = deepcopy_json(cfg)
        if kind == "vsock":
            if clone.get("vsock"):
                raise VmErr("Too many virtio-vsock devices")
            clone["vsock"] = dev
        else:
            clone.setdefault(kind, []).append(dev)
        validate_config(clone)
        if self.live is None:
            if kind == "vsock":
                cfg["vsock"] = dev
            else:
                cfg.setdefault(kind, []).append(dev)
            return 204, None
        live = self.live
        prefix = dict(ID_PREFIX)[kind]
        if not dev.get("id"):
            dev["id"] = live.next_name(prefix)
        elif dev["id"] in live.slots:   # e.g. removed, but not yet ejected by the guest
            raise VmErr("Error from device manager",
                        "Invalid identifier as it is not unique: %s" % dev["id"])
        self._open_device(live, kind, dev)
        try:
            slot = live.alloc_slot(dev["id"])
        except VmErr:
            live.release_device(dev["id"])
            raise
        if kind == "vsock":
            cfg["vsock"] = dev
        else:
            cfg.setdefault(kind, []).append(dev)
        LOG.info("Hot-plugged %s %s at %s" % (kind, dev["id"], bdf(slot)))
        return 200, {"id": dev["id"], "bdf": bdf(slot)}

    def _remove_from_config(self, dev_id):
        cfg = self.config
        for kind in LIST_KINDS:
            devs = cfg.get(kind) or []
            for i, dev in enumerate(devs):
                if dev.get("id") == dev_id:
                    del devs[i]
                    if not devs:
                        del cfg[kind]
                    return True
        if cfg.get("vsock") and cfg["vsock"].get("id") == dev_id:
            del cfg["vsock"]
            return True
        return False

    def do_remove_device(self, body):
        dev_id = body.get("id")
        if self.live is None:
            if self.config is None:
                raise not_created()
            if not self._remove_from_config(dev_id):
                raise VmErr('No device with id "%s" to remove' % dev_id)
            return 204, None
        if dev_id in BUILTIN_SLOT_IDS or not self._remove_from_config(dev_id):
            raise VmErr("Error from device manager",
                        "Failed to find device corresponding to the given identifier: %s"
                        % dev_id)
        if env_flag("CHSIM_IGNORE_ACPI"):
            # The guest never ejects it: CH keeps the device (and its files, its id, its node
            # in device_tree); only the config forgets it.
            self.live.pending_removal.add(dev_id)
            return 204, None
        self.live.release_device(dev_id)
        EVENTS.emit("vm", "device-removed", {"id": dev_id})
        return 204, None

    def do_snapshot(self, body):
        live = self.live
        if live is None:
            raise not_running()
        if live.state != "Paused":
            raise VmErr("Cannot snapshot VM",
                        "Failed to snapshot migratable component",
                        "Trying to snapshot while VM is running")
        EVENTS.emit("vm", "snapshotting")
        # CH v53.0's chains (transcript "snapshot")
        send = ("Cannot send VM snapshot", "Failed to send migratable component snapshot")
        dest = url_to_path(body.get("destination_url"), *send)
        if not os.path.isdir(dest):
            raise VmErr(*(send + ("Destination is not a directory: %s" % json.dumps(dest),)))
        size = self.memory_actual_size()
        counter = live.snapshot_counter + 1
        state = {
            "chsim": 1,
            "version": self.version, "build_version": self.build_version,
            "pid": os.getpid(),
            "boot_time": live.boot_time, "snapshot_time": time.time(),
            "snapshot_counter": counter,
            "vcpus": self.config["cpus"]["boot_vcpus"],
            "state": live.state, "memory_actual_size": size,
            "restored_from": live.restored_from,
            "devices": {k: bdf(v) for k, v in live.slots.items()},
        }

        what = {"config.json": "VM config", "state.json": "VM state",
                "memory-ranges": "memory ranges"}   # only the first one is recorded

        def create(name):
            p = os.path.join(dest, name)
            try:
                return p, os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except OSError as e:
                raise VmErr(*(send + ("Error creating %s snapshot file" % what[name], oserr(e))))

        def write_all(p, fd, data, offset=None):
            try:
                view = memoryview(data)
                pos = offset
                while view:
                    n = os.pwrite(fd, view, pos) if pos is not None else os.write(fd, view)
                    view = view[n:]
                    if pos is not None:
                        pos += n
            except OSError as e:
                raise VmErr(*(send + ("Error writing %s snapshot file %s"
                                      % (what[os.path.basename(p)], json.dumps(p)), oserr(e))))

        for name in ("config.json", "memory-ranges", "state.json"):
            p, fd = create(name)
            try:
                if name == "config.json":
                    write_all(p, fd, json.dumps(self.config).encode())
                elif name == "state.json":
                    write_all(p, fd, json.dumps(state).encode())
                else:
                    try:
                        os.ftruncate(fd, size)
                    except OSError as e:
                        raise VmErr(*(send + ("Error writing memory ranges snapshot file %s"
                                              % json.dumps(p), oserr(e))))
                    chunk = (("chsim memory page, snapshot %d, boot %.6f\n"
                              % (counter, live.boot_time)) * 64)[:4096].encode()
                    for off in (0, (size // 2) & ~4095):
                        if off + len(chunk) <= size:
                            write_all(p, fd, chunk * 2 if off + 8192 <= size else chunk, off)
            finally:
                os.close(fd)
        live.snapshot_counter = counter
        LOG.info("VM snapshot #%d written to %s" % (counter, dest))
        EVENTS.emit("vm", "snapshotted")
        return 204, None

    def do_restore(self, body):
        if self.live is not None or self.config is not None:
            raise already_created()
        src = url_to_path(body.get("source_url"), "Cannot restore VM")
        prefault = bool(body.get("prefault"))
        mode = body.get("memory_restore_mode") or "Copy"
        resume = bool(body.get("resume"))
        EVENTS.emit("vm", "restoring")
        # CH v53.0's texts (transcript "snapshot-restore"), paths Debug-quoted as in Rust
        if not os.path.isdir(src):
            raise VmErr("Cannot restore VM", "Failed to send migratable component snapshot",
                        "Destination is not a directory: %s" % json.dumps(src))
        cpath = os.path.join(src, "config.json")
        try:
            with open(cpath, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise VmErr("Cannot restore VM", "Failed to receive migratable component snapshot",
                        "Error opening VM config snapshot file %s" % json.dumps(cpath),
                        oserr(e))
        try:
            cfg = json.loads(raw)
            if not isinstance(cfg, dict):
                raise ValueError("expected a JSON object")
        except ValueError as e:
            raise VmErr("Cannot restore VM", "Error deserialising VM config %s: %s" % (cpath, e))
        problems = SPEC.check("VmConfig", cfg)
        if problems:
            raise VmErr("Cannot restore VM",
                        "Error deserialising VM config %s: %s" % (cpath, "; ".join(problems)))
        if prefault and mode == "OnDemand":
            raise validation("'prefault' cannot be combined with "
                             "'memory_restore_mode=ondemand'")
        spath = os.path.join(src, "state.json")
        try:
            with open(spath, "rb") as f:
                state = json.loads(f.read())
            if not isinstance(state, dict):
                raise ValueError("expected a JSON object")
        except OSError as e:
            raise VmErr("Cannot restore VM", "Error receiving migration data: failed to open "
                        "%s: %s" % (spath, oserr(e)))
        except ValueError as e:
            raise VmErr("Cannot restore VM", "Error deserialising VM state %s: %s" % (spath, e))
        snap_version = str(state.get("version", ""))
        if snap_version.split(".", 1)[0] != self.version.split(".", 1)[0]:
            raise VmErr("Cannot restore VM",
                        "Snapshot from cloud-hypervisor %s is not compatible with %s"
                        % (state.get("build_version", snap_version or "unknown"),
                           self.build_version))
        mpath = os.path.join(src, "memory-ranges")
        try:
            mst = os.stat(mpath)
        except OSError as e:
            raise VmErr("Cannot restore VM", "Failed to restore memory manager",
                        "failed to open %s: %s" % (mpath, oserr(e)))
        want = state.get("memory_actual_size")
        if isinstance(want, int) and mst.st_size < want:
            raise VmErr("Cannot restore VM", "Failed to restore memory manager",
                        "%s is %d bytes, expected %d" % (mpath, mst.st_size, want))
        cfg = normalize_config(cfg)
        self.config = cfg
        try:
            self._prepare_consoles()
            live = self._bring_up(cfg, restoring=True)
        except Exception:
            # CH deletes the half-restored VM.
            self._close_consoles()
            self.config = None
            raise
        live.state = "Paused"
        live.boot_time = float(state.get("boot_time", live.boot_time))
        live.snapshot_counter = int(state.get("snapshot_counter", 0))
        live.restored_from = src
        self.live = live
        LOG.info("VM restored from %s (snapshot #%d of a VM booted at %.6f, "
                 "memory_restore_mode=%s, prefault=%s, resume=%s)"
                 % (src, live.snapshot_counter, live.boot_time, mode, prefault, resume))
        EVENTS.emit("vm", "restored")
        if resume:
            self.do_resume(None)
        return 204, None

    def do_receive_migration(self, _body):
        raise VmErr("Live migration is not simulated by chsim")

    def do_send_migration(self, _body):
        if self.live is None:
            raise not_running()
        raise VmErr("Live migration is not simulated by chsim")

    # ---------------- dispatch ----------------

    def dispatch(self, endpoint, body):
        table = {
            "vmm.ping": self.do_ping, "vm.info": self.do_info,
            "vm.counters": self.do_counters, "vmm.shutdown": self.do_vmm_shutdown,
            "vm.create": self.do_create, "vm.delete": self.do_delete,
            "vm.boot": self.do_boot, "vm.pause": self.do_pause,
            "vm.resume": self.do_resume, "vm.shutdown": self.do_shutdown,
            "vm.reboot": self.do_reboot, "vm.power-button": self.do_power_button,
            "vm.nmi": self.do_nmi, "vm.resize": self.do_resize,
            "vm.resize-disk": self.do_resize_disk, "vm.resize-zone": self.do_resize_zone,
            "vm.remove-device": self.do_remove_device, "vm.snapshot": self.do_snapshot,
            "vm.restore": self.do_restore,
            "vm.receive-migration": self.do_receive_migration,
            "vm.send-migration": self.do_send_migration,
        }
        if endpoint in ADD_KINDS:
            return self.do_add(endpoint, body)
        return table[endpoint](body)

    def api(self, method, endpoint, raw_body):
        """Returns (status, payload) where payload is a JSON-able object, bytes or None."""
        route = ROUTES.get(endpoint)
        if route is None:
            raise HttpErr(404, ["Not Found"])
        want_method, body_kind = route
        if method != want_method:
            raise HttpErr(400, ["Bad Request"])
        body = None
        if body_kind is None:
            if raw_body:
                raise HttpErr(400, ["Bad Request"])
        elif body_kind != "any":
            if not raw_body:
                # CH v53.0: vm.create answers 400 with an empty body, the other actions
                # ["Bad Request"] (transcripts "errors", "resize")
                raise HttpErr(400, None if endpoint == "vm.create" else ["Bad Request"])
            try:
                body = json.loads(raw_body)
            except (ValueError, UnicodeDecodeError) as e:
                raise HttpErr(400, ["Failed to deserialize JSON", serde_like(e)])
            if not isinstance(body, dict):
                raise HttpErr(400, ["Failed to deserialize JSON",
                                    "invalid type: %s, expected struct %s"
                                    % (json_type(body), body_kind)])
            problems = SPEC.check(body_kind, body, raw_body)
            if problems:
                raise HttpErr(400, ["Failed to deserialize JSON"] + problems)
        with self.lock:
            if method == "PUT":
                delay = env_float("CHSIM_DELAY", 0.0)
                if delay > 0:
                    time.sleep(delay)
            LOG.info("API request event: %s" % endpoint)
            try:
                return self.dispatch(endpoint, body)
            except VmErr as e:
                raise HttpErr(e.status, ["Error from API", ACTION_MSG.get(endpoint, endpoint)]
                              + e.chain)

    def teardown(self):
        """Process exit: CH's vmm_shutdown path."""
        if self.config is not None or self.live is not None:
            self._delete()
            EVENTS.emit("vmm", "shutdown")
        self._close_consoles()


# Python's json messages -> serde_json's
SERDE_SYNTAX = {"Expecting property name enclosed in double quotes": "key must be a string",
                "Expecting value": "expected value", "Expecting ':' delimiter": "expected `:`",
                "Expecting ',' delimiter": "expected `,` or `}`",
                "Unterminated string starting at": "EOF while parsing a string",
                "Extra data": "trailing characters"}


def serde_like(exc):
    if isinstance(exc, json.JSONDecodeError):
        return "%s at line %d column %d" % (SERDE_SYNTAX.get(exc.msg, exc.msg), exc.lineno,
                                            exc.colno)
    return str(exc)


def json_type(v):
    """serde's Unexpected, as in ``invalid type: string "big", expected u64``."""
    if isinstance(v, list):
        return "sequence"
    if isinstance(v, dict):
        return "map"
    if isinstance(v, str):
        return "string %s" % json.dumps(v)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean `%s`" % str(v).lower()
    if isinstance(v, float):
        return "floating point `%s`" % v
    return "integer `%s`" % v


# --------------------------------------------------------------------------
# process exit
# --------------------------------------------------------------------------

EXIT = None  # a threading.Event, created by main() once the socket listens
_EXIT_STATE = {"code": None, "reason": None}
_EXIT_LOCK = _thread.allocate_lock()


def request_exit(code, reason):
    with _EXIT_LOCK:
        if _EXIT_STATE["code"] is None:
            _EXIT_STATE["code"] = code
            _EXIT_STATE["reason"] = reason
    if EXIT is not None:
        EXIT.set()


def _exit_after_vmm_shutdown():
    request_exit(0, "vmm.shutdown")


class ApiSocket:
    def __init__(self, path):
        self.path = path
        self.sock = None
        self.ino = None
        self.lock_fd = None

    def bind(self):
        mode = (os.environ.get("CHSIM_STALE_SOCKET") or "fail").strip().lower()
        path = self.path
        if mode == "clean":
            # v53: take <path>.lock, then any socket at path is stale.
            try:
                fd = os.open(path + ".lock", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as e:
                raise VmErr("Error creating API server socket %s: %s" % (path, oserr(e)))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise VmErr("API socket %s is in use by another Cloud Hypervisor instance"
                            % path)
            self.lock_fd = fd
            try:
                os.unlink(path)
            except OSError:
                pass
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            s.bind(path)
        except OSError as e:
            s.close()
            if e.errno == errno.EADDRINUSE:
                raise VmErr("Error creating API server socket %s: Address in use "
                            "(stale socket file? remove it first): %s" % (path, oserr(e)))
            raise VmErr("Error creating API server socket %s: %s" % (path, oserr(e)))
        finally:
            os.umask(old)
        s.listen(128)
        self.sock = s
        try:
            self.ino = os.stat(path).st_ino
        except OSError:
            self.ino = None

    def close(self):
        if self.sock is None:
            return
        try:
            self.sock.close()
        except OSError:
            pass
        try:
            if self.ino is not None and os.stat(self.path).st_ino == self.ino:
                os.unlink(self.path)
        except OSError:
            pass
        self.sock = None


# --------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------


class HttpServer:
    def __init__(self, vmm, listener):
        self.vmm = vmm
        self.listener = listener

    def start(self):
        threading.Thread(target=self._accept_loop, name="http-server", daemon=True).start()

    def _accept_loop(self):
        while not EXIT.is_set():
            try:
                conn, _addr = self.listener.accept()
            except OSError:
                if EXIT.is_set():
                    return
                time.sleep(0.01)
                continue
            threading.Thread(target=self._serve, args=(conn,), name="http-server",
                             daemon=True).start()

    def _serve(self, conn):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                    if len(buf) > (1 << 20):
                        self._send(conn, 400, json.dumps(["Bad Request"]).encode(), True)
                        return
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split()
                if len(parts) != 3:
                    self._send(conn, 400, json.dumps(["Bad Request"]).encode(), True)
                    return
                method, target, version = parts
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                try:
                    length = int(headers.get("content-length", "0") or 0)
                except ValueError:
                    length = -1
                if length < 0 or "chunked" in headers.get("transfer-encoding", "").lower():
                    self._send(conn, 400, json.dumps(["Bad Request"]).encode(), True)
                    return
                if length and headers.get("expect", "").lower() == "100-continue" \
                        and len(buf) < length:
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                while len(buf) < length:
                    data = conn.recv(max(65536, length - len(buf)))
                    if not data:
                        return
                    buf += data
                body, buf = buf[:length], buf[length:]
                close = version == "HTTP/1.0" or headers.get("connection", "").lower() == "close"
                after = self._handle(conn, method, target, body, close)
                if after:
                    after()
                if close:
                    return
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _handle(self, conn, method, target, body, close):
        if target.startswith(("http://", "https://")):
            # absolute-form request target: keep the path only
            rest = target.split("://", 1)[1]
            target = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        path = target.split("?", 1)[0]
        endpoint = path[len(API_ROOT):] if path.startswith(API_ROOT) else path
        after = None
        try:
            if not path.startswith(API_ROOT):
                raise HttpErr(404, ["Not Found"])
            status, payload = self.vmm.api(method, endpoint, body)
            if payload is None:
                data = b""
            elif isinstance(payload, bytes):
                data = payload
            else:
                data = json.dumps(payload).encode()
            if endpoint == "vmm.shutdown" and method == "PUT":
                after = _exit_after_vmm_shutdown
        except HttpErr as e:
            status = e.status
            data = b"" if e.messages is None else json.dumps(e.messages).encode()
            LOG.info("HTTP API error response: %s" % ": ".join(e.messages or ["(empty)"]))
        except Exception as e:  # a simulator bug: report it CH-style
            LOG.error("internal error handling %s %s: %r" % (method, path, e))
            status, data = 500, json.dumps(["Internal Server Error", "chsim: %r" % e]).encode()
        LOG.info("HTTP %s %s -> %d" % (method, path, status))
        request_log(method, endpoint, status, body)
        self._send(conn, status, data, close)
        return after

    def _send(self, conn, status, data, close):
        # CH's micro_http: an empty reason phrase; a 204 has neither Content-Type nor
        # Content-Length, every other answer both (Content-Length: 0 for an empty body).
        head = ["HTTP/1.1 %d " % status,
                "Server: Cloud Hypervisor API",
                "Connection: %s" % ("close" if close else "keep-alive")]
        if status != 204:
            head.append("Content-Type: application/json")
            head.append("Content-Length: %d" % len(data))
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + (data if status != 204 else b""))


# --------------------------------------------------------------------------
# command line (CH's clap definition, the parts that matter)
# --------------------------------------------------------------------------

USAGE = "Usage: cloud-hypervisor [OPTIONS]"
HELP = """Cloud Hypervisor (simulated by chsim): launch and manage a VM through a REST API.

%s

Options:
      --cpus <cpus>              boot=<boot_vcpus>,max=<max_vcpus>,topology=...,kvm_hyperv=on|off,...
      --platform <platform>      num_pci_segments=..,iommu_segments=..,serial_number=..,uuid=..,...
      --memory <memory>          size=<guest_memory_size>,hotplug_size=..,shared=on|off,hugepages=on|off,...
      --memory-zone <zone>...    id=..,size=..,...
      --firmware <firmware>      Path to firmware that is loaded in an architectural specific way
      --kernel <kernel>          Path to kernel or firmware that supports a PVH entry point
      --initramfs <initramfs>    Path to initramfs image
      --cmdline <cmdline>        Kernel command line
      --disk <disk>...           path=<disk_image_path>,readonly=on|off,image_type=raw|qcow2|...,id=..
      --net <net>...             tap=<if_name>,ip=..,mask=..,mac=..,num_queues=..,id=..
      --rng <rng>                src=<entropy_source_path>
      --balloon <balloon>        size=<balloon_size>,deflate_on_oom=on|off,free_page_reporting=on|off
      --fs <fs>...               tag=..,socket=..,num_queues=..,queue_size=..,id=..
      --pmem <pmem>...           file=..,size=..,iommu=on|off,discard_writes=on|off,id=..
      --serial <serial>          off|null|pty|tty|file=</path/to/a/file>|socket=</path/to/a/file>
      --console <console>        off|null|pty|tty|file=</path/to/a/file>,iommu=on|off
      --device <device>...       path=<device_path>,iommu=on|off,id=..
      --user-device <dev>...     socket=<socket_path>,id=..
      --vdpa <vdpa>...           path=..,num_queues=..,iommu=on|off,id=..
      --vsock <vsock>            cid=<context_id>,socket=<socket_path>,iommu=on|off,id=..
      --pvpanic                  Enable pvpanic device
      --numa <numa>...           guest_numa_id=..,cpus=..,distances=..,memory_zones=..
      --watchdog                 Enable virtio-watchdog
  -v...                          Sets the level of debugging output
      --log-file <log-file>      Log file. Standard error is used if not specified
      --api-socket <api-socket>  HTTP API socket (UNIX domain socket): path=</path/to/a/file>
      --event-monitor <monitor>  File to report events on: path=</path/to/a/file> or fd=<fd>
      --restore <restore>        Restore from a VM snapshot: source_url=file://..,prefault=on|off,
                                 memory_restore_mode=copy|ondemand,resume=true|false
      --seccomp <seccomp>        Seccomp configuration (true, false or log) [default: true]
      --no-shutdown              Do not exit the VMM when the guest powers off
  -h, --help                     Print help
  -V, --version                  Print version
""" % USAGE

SINGLE = {"--cpus", "--platform", "--memory", "--firmware", "--kernel", "--initramfs",
          "--cmdline", "--igvm", "--host-data", "--rng", "--balloon", "--serial", "--console",
          "--debug-console", "--vsock", "--tpm", "--log-file", "--api-socket",
          "--event-monitor", "--restore", "--seccomp"}
MULTI = {"--memory-zone", "--disk", "--net", "--fs", "--pmem", "--device", "--user-device",
         "--vdpa", "--numa", "--pci-segment", "--landlock-rules", "--rate-limit-group"}
FLAGS = {"--pvpanic", "--watchdog", "--no-shutdown", "--landlock", "--help", "--version"}


class CliUsage(Exception):
    """clap usage error: exit code 2."""


class CliError(Exception):
    """config parse error: exit code 1."""


def clap_error(msg):
    return CliUsage("error: %s\n\n%s\n\nFor more information, try '--help'." % (msg, USAGE))


def parse_argv(argv):
    opts = {"verbosity": 0}
    i = 0
    n = len(argv)
    while i < n:
        arg = argv[i]
        i += 1
        if arg in ("-h",):
            opts["--help"] = True
            continue
        if arg in ("-V",):
            opts["--version"] = True
            continue
        if arg.startswith("-v") and set(arg[1:]) == {"v"}:
            opts["verbosity"] += len(arg) - 1
            continue
        if not arg.startswith("--") or arg == "--":
            raise clap_error("unexpected argument '%s' found" % arg)
        name, eq, inline = arg.partition("=")
        if name in FLAGS:
            if eq:
                raise clap_error("unexpected value '%s' for '%s' found; no more were expected"
                                 % (inline, name))
            if name in opts and name not in ("--help", "--version"):
                raise clap_error("the argument '%s' cannot be used multiple times" % name)
            opts[name] = True
            continue
        if name in SINGLE or name in MULTI:
            values = []
            if eq:
                values.append(inline)
            elif i < n and not argv[i].startswith("-"):
                values.append(argv[i])
                i += 1
            if not values:
                raise clap_error("a value is required for '%s <%s>' but none was supplied"
                                 % (name, name[2:]))
            if name in MULTI:
                while i < n and not argv[i].startswith("-"):
                    values.append(argv[i])
                    i += 1
                opts.setdefault(name, []).extend(values)
            else:
                if name in opts:
                    raise clap_error("the argument '%s <%s>' cannot be used multiple times"
                                     % (name, name[2:]))
                opts[name] = values[0]
            continue
        raise clap_error("unexpected argument '%s' found\n\n  tip: to pass '%s' as a value, "
                         "use '-- %s'" % (name, name, name))
    if "--restore" in opts:
        for other in ("--kernel", "--firmware", "--igvm"):
            if other in opts:
                raise clap_error("the argument '--restore <restore>' cannot be used with "
                                 "'%s <%s>'" % (other, other[2:]))
    if "--seccomp" in opts and opts["--seccomp"] not in ("true", "false", "log"):
        raise clap_error("invalid value '%s' for '--seccomp <seccomp>'\n  [possible values: "
                         "true, false, log]" % opts["--seccomp"])
    return opts


def split_top(s):
    """Split on commas that are not inside [] or quotes."""
    out, cur, depth, quote = [], "", 0, False
    for ch in s:
        if ch == '"':
            quote = not quote
        elif not quote and ch == "[":
            depth += 1
        elif not quote and ch == "]":
            depth -= 1
        if ch == "," and depth == 0 and not quote:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [x for x in out if x != ""]


def kv(flag, s, keys, bare=None):
    out = {}
    for item in split_top(s):
        if "=" in item:
            k, v = item.split("=", 1)
        elif bare is not None:
            k, v = bare, item
        else:
            k, v = item, ""
        if k not in keys:
            raise CliError("Error parsing %s: unknown option: %s" % (flag, k))
        out[k] = v.strip('"')
    return out


def cv_toggle(flag, k, v):
    lv = v.lower()
    if lv in ("on", "true", "yes", ""):
        return True
    if lv in ("off", "false", "no"):
        return False
    raise CliError("Error parsing %s: invalid value for %s: %s" % (flag, k, v))


def cv_int(flag, k, v):
    try:
        return int(v, 0)
    except ValueError:
        raise CliError("Error parsing %s: invalid value for %s: %s" % (flag, k, v))


def cv_size(flag, k, v):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    s = v.strip()
    m = 1
    if s and s[-1].upper() in mult:
        m = mult[s[-1].upper()]
        s = s[:-1]
    try:
        return int(s) * m
    except ValueError:
        raise CliError("Error parsing %s: invalid value for %s: %s" % (flag, k, v))


def cv_intlist(flag, k, v):
    out = []
    for part in v.strip("[]").split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(cv_int(flag, k, a), cv_int(flag, k, b) + 1))
        else:
            out.append(cv_int(flag, k, part))
    return out


def cv_strlist(_flag, _k, v):
    return [x.strip('"') for x in v.strip("[]").split(",") if x]


def build(flag, s, spec, bare=None):
    """spec: cli key -> (config key, converter)."""
    raw = kv(flag, s, spec.keys(), bare)
    out = {}
    for k, v in raw.items():
        dest, conv = spec[k]
        if dest is None:
            continue
        out[dest] = conv(flag, k, v) if conv else v
    return out


def rate_limiter(flag, raw_map):
    rl = {}
    for bucket in ("bw", "ops"):
        b = {}
        for field, dest in (("size", "size"), ("one_time_burst", "one_time_burst"),
                            ("refill_time", "refill_time")):
            key = "%s_%s" % (bucket, field)
            if key in raw_map:
                b[dest] = cv_int(flag, key, raw_map.pop(key))
        if b:
            b.setdefault("one_time_burst", 0)
            rl["bandwidth" if bucket == "bw" else "ops"] = b
    return rl or None


RL_KEYS = ["bw_size", "bw_one_time_burst", "bw_refill_time", "ops_size",
           "ops_one_time_burst", "ops_refill_time"]
T, I, S, SZ = cv_toggle, cv_int, None, cv_size
IMAGE_TYPES = {"raw": "Raw", "qcow2": "Qcow2", "vhdx": "Vhdx", "fixed_vhd": "FixedVhd",
               "fixedvhd": "FixedVhd", "vhd": "FixedVhd", "unknown": "Unknown"}


def cv_image_type(flag, k, v):
    if v.lower() not in IMAGE_TYPES:
        raise CliError("Error parsing %s: invalid value for %s: %s" % (flag, k, v))
    return IMAGE_TYPES[v.lower()]


def cv_lock(flag, k, v):
    m = {"byte-range": "ByteRange", "byterange": "ByteRange", "full": "Full"}
    if v.lower() not in m:
        raise CliError("Error parsing %s: invalid value for %s: %s" % (flag, k, v))
    return m[v.lower()]


def cv_topology(flag, k, v):
    parts = v.split(":")
    if len(parts) != 4:
        raise CliError("Error parsing %s: invalid value for %s: %s" % (flag, k, v))
    vals = [cv_int(flag, k, p) for p in parts]
    return dict(zip(["threads_per_core", "cores_per_die", "dies_per_package", "packages"], vals))


def cv_affinity(flag, k, v):
    out = []
    inner = v.strip()[1:-1] if v.strip().startswith("[") else v
    for item in split_top(inner):
        if "@" not in item:
            raise CliError("Error parsing %s: invalid value for %s: %s" % (flag, k, v))
        vcpu, cpus = item.split("@", 1)
        out.append({"vcpu": cv_int(flag, k, vcpu), "host_cpus": cv_intlist(flag, k, cpus)})
    return out


def cv_hotplug_method(flag, k, v):
    m = {"acpi": "Acpi", "virtio-mem": "VirtioMem", "virtiomem": "VirtioMem"}
    if v.lower() not in m:
        raise CliError("Error parsing %s: invalid value for %s: %s" % (flag, k, v))
    return m[v.lower()]


def parse_console(flag, s, extra):
    raw = kv(flag, s, ["mode", "file", "socket", "iommu", "iobase"] + extra, bare="mode")
    out = {}
    mode = raw.get("mode")
    if "file" in raw:
        out["mode"], out["file"] = "File", raw["file"]
    elif "socket" in raw:
        out["mode"], out["socket"] = "Socket", raw["socket"]
    elif mode is not None:
        m = {"off": "Off", "null": "Null", "pty": "Pty", "tty": "Tty"}
        if mode.lower() not in m:
            raise CliError("Error parsing %s: invalid value for mode: %s" % (flag, mode))
        out["mode"] = m[mode.lower()]
    else:
        raise CliError("Error parsing %s: invalid console mode" % flag)
    if "iommu" in raw:
        out["iommu"] = cv_toggle(flag, "iommu", raw["iommu"])
    if "iobase" in raw:
        out["iobase"] = cv_int(flag, "iobase", raw["iobase"])
    return out


def config_from_cli(o):
    cfg = {}
    if "--cpus" in o:
        c = build("--cpus", o["--cpus"], {
            "boot": ("boot_vcpus", I), "max": ("max_vcpus", I), "topology": ("topology", cv_topology),
            "kvm_hyperv": ("kvm_hyperv", T), "max_phys_bits": ("max_phys_bits", I),
            "affinity": ("affinity", cv_affinity), "features": ("features", None),
            "nested": ("nested", T), "core_scheduling": ("core_scheduling", None)})
        if "features" in c:
            c["features"] = {"amx": "amx" in c["features"].split(",")}
        if "core_scheduling" in c:
            c["core_scheduling"] = c["core_scheduling"].capitalize()
        c.setdefault("boot_vcpus", 1)
        c.setdefault("max_vcpus", c["boot_vcpus"])
        cfg["cpus"] = c
    if "--memory" in o:
        m = build("--memory", o["--memory"], {
            "size": ("size", SZ), "file": (None, S), "mergeable": ("mergeable", T),
            "hotplug_method": ("hotplug_method", cv_hotplug_method),
            "hotplug_size": ("hotplug_size", SZ), "hotplugged_size": ("hotplugged_size", SZ),
            "shared": ("shared", T), "hugepages": ("hugepages", T),
            "hugepage_size": ("hugepage_size", SZ), "prefault": ("prefault", T),
            "thp": ("thp", T), "reserve": ("reserve", T)})
        m.setdefault("size", DEFAULT_MEMORY)
        cfg["memory"] = m
    zones = []
    for z in o.get("--memory-zone", []):
        zones.append(build("--memory-zone", z, {
            "id": ("id", S), "size": ("size", SZ), "file": ("file", S),
            "shared": ("shared", T), "hugepages": ("hugepages", T),
            "hugepage_size": ("hugepage_size", SZ), "host_numa_node": ("host_numa_node", I),
            "hotplug_size": ("hotplug_size", SZ), "hotplugged_size": ("hotplugged_size", SZ),
            "prefault": ("prefault", T), "mergeable": ("mergeable", T)}))
    if zones:
        cfg.setdefault("memory", {"size": 0})["zones"] = zones
    payload = {}
    for flag, key in (("--kernel", "kernel"), ("--firmware", "firmware"),
                      ("--cmdline", "cmdline"), ("--initramfs", "initramfs"),
                      ("--igvm", "igvm"), ("--host-data", "host_data")):
        if flag in o:
            payload[key] = o[flag]
    if payload:
        cfg["payload"] = payload
    disks = []
    for d in o.get("--disk", []):
        raw = kv("--disk", d, ["path", "readonly", "direct", "iommu", "queue_size", "num_queues",
                               "vhost_user", "socket", "id", "pci_segment", "serial",
                               "rate_limit_group", "queue_affinity", "backing_files", "sparse",
                               "image_type", "lock_granularity", "_disable_io_uring",
                               "_disable_aio"] + RL_KEYS)
        rl = rate_limiter("--disk", raw)
        disk = build("--disk", ",".join("%s=%s" % kv_ for kv_ in raw.items()), {
            "path": ("path", S), "readonly": ("readonly", T), "direct": ("direct", T),
            "iommu": ("iommu", T), "queue_size": ("queue_size", I),
            "num_queues": ("num_queues", I), "vhost_user": ("vhost_user", T),
            "socket": ("vhost_socket", S), "id": ("id", S), "pci_segment": ("pci_segment", I),
            "serial": ("serial", S), "rate_limit_group": ("rate_limit_group", S),
            "queue_affinity": (None, S), "backing_files": ("backing_files", T),
            "sparse": ("sparse", T), "image_type": ("image_type", cv_image_type),
            "lock_granularity": ("lock_granularity", cv_lock),
            "_disable_io_uring": (None, S), "_disable_aio": (None, S)})
        if rl:
            disk["rate_limiter_config"] = rl
        disks.append(disk)
    if disks:
        cfg["disks"] = disks
    nets = []
    for nv in o.get("--net", []):
        raw = kv("--net", nv, ["tap", "ip", "mask", "mac", "host_mac", "offload_tso",
                               "offload_ufo", "offload_csum", "mtu", "iommu", "queue_size",
                               "num_queues", "vhost_user", "socket", "vhost_mode", "id", "fd",
                               "pci_segment"] + RL_KEYS)
        if "fd" in raw:
            raise CliError("Error parsing --net: fd= is not supported by chsim")
        rl = rate_limiter("--net", raw)
        net = build("--net", ",".join("%s=%s" % kv_ for kv_ in raw.items()), {
            "tap": ("tap", S), "ip": ("ip", S), "mask": ("mask", S), "mac": ("mac", S),
            "host_mac": ("host_mac", S), "offload_tso": ("offload_tso", T),
            "offload_ufo": ("offload_ufo", T), "offload_csum": ("offload_csum", T),
            "mtu": ("mtu", I), "iommu": ("iommu", T), "queue_size": ("queue_size", I),
            "num_queues": ("num_queues", I), "vhost_user": ("vhost_user", T),
            "socket": ("vhost_socket", S), "vhost_mode": ("vhost_mode", None),
            "id": ("id", S), "fd": (None, S), "pci_segment": ("pci_segment", I)})
        if "vhost_mode" in net:
            net["vhost_mode"] = net["vhost_mode"].capitalize()
        if rl:
            net["rate_limiter_config"] = rl
        nets.append(net)
    if nets:
        cfg["net"] = nets
    if "--rng" in o:
        cfg["rng"] = build("--rng", o["--rng"], {"src": ("src", S), "iommu": ("iommu", T)})
        cfg["rng"].setdefault("src", "/dev/urandom")
    if "--balloon" in o:
        cfg["balloon"] = build("--balloon", o["--balloon"], {
            "size": ("size", SZ), "deflate_on_oom": ("deflate_on_oom", T),
            "free_page_reporting": ("free_page_reporting", T)})
        cfg["balloon"].setdefault("size", 0)
    simple_multi = [
        ("--fs", "fs", {"tag": ("tag", S), "socket": ("socket", S),
                        "num_queues": ("num_queues", I), "queue_size": ("queue_size", I),
                        "id": ("id", S), "pci_segment": ("pci_segment", I)}),
        ("--pmem", "pmem", {"file": ("file", S), "size": ("size", SZ), "iommu": ("iommu", T),
                            "discard_writes": ("discard_writes", T), "id": ("id", S),
                            "pci_segment": ("pci_segment", I)}),
        ("--device", "devices", {"path": ("path", S), "iommu": ("iommu", T), "id": ("id", S),
                                 "pci_segment": ("pci_segment", I)}),
        ("--user-device", "user_devices", {"socket": ("socket", S), "id": ("id", S),
                                           "pci_segment": ("pci_segment", I)}),
        ("--vdpa", "vdpa", {"path": ("path", S), "num_queues": ("num_queues", I),
                            "iommu": ("iommu", T), "id": ("id", S),
                            "pci_segment": ("pci_segment", I)}),
        ("--pci-segment", "pci_segments", {
            "pci_segment": ("pci_segment", I),
            "mmio32_aperture_weight": ("mmio32_aperture_weight", I),
            "mmio64_aperture_weight": ("mmio64_aperture_weight", I)}),
        ("--landlock-rules", "landlock_rules", {"path": ("path", S), "access": ("access", S)}),
        ("--numa", "numa", {"guest_numa_id": ("guest_numa_id", I), "cpus": ("cpus", cv_intlist),
                            "distances": (None, S), "memory_zones": ("memory_zones", cv_strlist),
                            "pci_segments": ("pci_segments", cv_intlist),
                            "device_id": ("device_id", S)}),
    ]
    for flag, key, spec in simple_multi:
        items = [build(flag, v, spec) for v in o.get(flag, [])]
        if items:
            cfg[key] = items
    if "--fs" in o:
        for f in cfg["fs"]:
            f.setdefault("num_queues", 1)
            f.setdefault("queue_size", 1024)
    if "--vsock" in o:
        cfg["vsock"] = build("--vsock", o["--vsock"], {
            "cid": ("cid", I), "socket": ("socket", S), "iommu": ("iommu", T), "id": ("id", S),
            "pci_segment": ("pci_segment", I)})
    if "--serial" in o:
        cfg["serial"] = parse_console("--serial", o["--serial"], [])
        cfg["serial"].pop("iommu", None)
    if "--console" in o:
        cfg["console"] = parse_console("--console", o["--console"], [])
    if "--debug-console" in o:
        cfg["debug_console"] = parse_console("--debug-console", o["--debug-console"], [])
    if "--platform" in o:
        cfg["platform"] = build("--platform", o["--platform"], {
            "num_pci_segments": ("num_pci_segments", I),
            "iommu_segments": ("iommu_segments", cv_intlist),
            "iommu_address_width": ("iommu_address_width_bits", I),
            "serial_number": ("serial_number", S), "uuid": ("uuid", S),
            "oem_strings": ("oem_strings", cv_strlist), "tdx": ("tdx", T),
            "sev_snp": ("sev_snp", T)})
    if "--tpm" in o:
        cfg["tpm"] = build("--tpm", o["--tpm"], {"socket": ("socket", S)})
    if o.get("--watchdog"):
        cfg["watchdog"] = True
    if o.get("--pvpanic"):
        cfg["pvpanic"] = True
    if o.get("--landlock"):
        cfg["landlock_enable"] = True
    return cfg


def parse_restore(s):
    raw = kv("--restore", s, ["source_url", "prefault", "memory_restore_mode", "resume"])
    if "source_url" not in raw:
        raise CliError("Error parsing --restore: source_url is required")
    out = {"source_url": raw["source_url"]}
    if "prefault" in raw:
        out["prefault"] = cv_toggle("--restore", "prefault", raw["prefault"])
    if "memory_restore_mode" in raw:
        m = {"copy": "Copy", "ondemand": "OnDemand"}
        v = raw["memory_restore_mode"].lower()
        if v not in m:
            raise CliError("Error parsing --restore: invalid value for memory_restore_mode: %s"
                           % raw["memory_restore_mode"])
        out["memory_restore_mode"] = m[v]
    if "resume" in raw:
        out["resume"] = cv_toggle("--restore", "resume", raw["resume"])
    return out


def parse_api_socket(s):
    if s.startswith("fd="):
        raise CliError("Error parsing --api-socket: fd= is not supported by chsim, use path=")
    if s.startswith("path="):
        s = s[5:]
    if not s:
        raise CliError("Error parsing --api-socket: path is missing")
    return s


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def fatal(chain, code=1):
    msg = "Error: Cloud Hypervisor exited with the following chain of errors:\n" + "".join(
        "  %d: %s\n" % (i, m) for i, m in enumerate(chain))
    if LOG.f is not None:
        LOG.error(": ".join(chain))
    try:
        sys.stderr.write(msg)
        sys.stderr.flush()
    except Exception:
        pass
    return code


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        opts = parse_argv(argv)
        if opts.get("--help"):
            sys.stdout.write(HELP)
            return 0
        if opts.get("--version"):
            sys.stdout.write("cloud-hypervisor %s\nMigration Protocol Versions: 0\n"
                             % version_info()[1])
            return 0
        sock_path = parse_api_socket(opts["--api-socket"]) if "--api-socket" in opts else None
        restore = parse_restore(opts["--restore"]) if "--restore" in opts else None
        cli_cfg = config_from_cli(opts)
    except CliUsage as e:
        sys.stderr.write("%s\n" % e)
        return 2
    except CliError as e:
        sys.stderr.write("Error: %s\n" % e)
        return 1

    # Signals first (the C module is cheap), then bind and listen: clients may
    # connect (and send signals) right away.
    if env_flag("CHSIM_IGNORE_SIGTERM"):
        _signal.signal(_signal.SIGTERM, _signal.SIG_IGN)
    else:
        _signal.signal(_signal.SIGTERM, lambda s, f: request_exit(0, "received SIGTERM"))
    _signal.signal(_signal.SIGINT, lambda s, f: request_exit(0, "received SIGINT"))

    api = None
    bind_err = None
    if sock_path:
        api = ApiSocket(sock_path)
        try:
            api.bind()
        except VmErr as e:
            bind_err = e
    try:
        LOG.open(opts.get("--log-file"), opts["verbosity"])
    except OSError as e:
        if api:
            api.close()
        return fatal(["Error creating log file %s: %s" % (opts.get("--log-file"), oserr(e))])
    warn_if_no_spec()   # the first line of the log when request bodies go unchecked
    if bind_err is not None:
        return fatal(["Failed to start the VMM"] + bind_err.chain)
    global EXIT
    EXIT = threading.Event()
    if _EXIT_STATE["code"] is not None:
        EXIT.set()
    if api is not None:
        api.sock = socket.socket(fileno=api.sock.detach())
    try:
        EVENTS.open(opts.get("--event-monitor"))
    except (OSError, ValueError) as e:
        if api:
            api.close()
        return fatal(["Error creating event monitor file: %s" % oserr(e)])

    vmm = Vmm(no_shutdown=bool(opts.get("--no-shutdown")))
    LOG.info("chsim %s (cloud-hypervisor %s) pid %d, args %s" % (
        vmm.version, vmm.build_version, os.getpid(), " ".join(argv)))
    code = None
    with vmm.lock:
        if api is not None:
            HttpServer(vmm, api.sock).start()
        SPEC.start()
        EVENTS.emit("vmm", "starting")
        try:
            if restore is not None:
                vmm.do_restore(restore)
            elif (cli_cfg.get("payload") or {}).keys() & {"kernel", "firmware", "igvm"}:
                # The CLI parser only produces well-typed, known fields.
                vmm.do_create(cli_cfg)
                vmm.do_boot(None)
        except VmErr as e:
            what = "Failed to restore VM" if restore is not None else "Failed to boot VM"
            code = fatal([what] + e.chain)
            vmm.teardown()
    if code is not None:
        if api:
            api.close()
        os._exit(code)

    while not EXIT.wait(0.5):
        pass
    code = _EXIT_STATE["code"] or 0
    LOG.info("VMM exiting (%s)" % _EXIT_STATE["reason"])
    got = vmm.lock.acquire(timeout=5)
    try:
        vmm.teardown()
    except Exception as e:  # pragma: no cover
        LOG.error("teardown failed: %r" % e)
    finally:
        if got:
            vmm.lock.release()
    if api:
        api.close()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
