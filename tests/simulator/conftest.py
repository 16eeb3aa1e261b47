"""Fixtures for the chsim conformance tests: launch the simulator exactly like
Cloud Hypervisor (through an installed launcher) and talk HTTP over its unix
socket with nothing but the standard library."""

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

from .transcripts import UnixHTTPConnection

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_install():
    spec = importlib.util.spec_from_file_location("chsim_install", os.path.join(HERE, "install.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


install_launcher = _load_install().install_launcher


class Resp:
    def __init__(self, status, raw, headers):
        self.status = status
        self.raw = raw
        self.headers = headers
        self.json = json.loads(raw) if raw else None

    def __repr__(self):
        return "<Resp %d %r>" % (self.status, self.raw[:300])


class Client:
    """A keep-alive HTTP client over one unix-socket connection."""

    def __init__(self, path, timeout=10):
        self.path = path
        self.timeout = timeout
        self.conn = None
        self.connections = 0

    def request(self, method, endpoint, body=None, raw=None, headers=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = dict(headers or {})
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        path = endpoint if endpoint.startswith("/") else "/api/v1/" + endpoint
        if self.conn is None:
            self.conn = UnixHTTPConnection(self.path, self.timeout)
            self.connections += 1
        try:
            self.conn.request(method, path, body=data, headers=hdrs)
            resp = self.conn.getresponse()
            payload = resp.read()
        except Exception:
            self.close()
            raise
        if resp.getheader("Connection", "").lower() == "close":
            self.close()
        return Resp(resp.status, payload, resp.headers)

    def get(self, endpoint):
        return self.request("GET", endpoint)

    def put(self, endpoint, body=None, raw=None):
        return self.request("PUT", endpoint, body=body, raw=raw)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Sim:
    def __init__(self, proc, sock, log, out, err, workdir):
        self.proc = proc
        self.sock = sock
        self.log = log
        self.out = out
        self.err = err
        self.workdir = workdir
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = Client(self.sock)
        return self._client

    def get(self, endpoint):
        return self.client.get(endpoint)

    def put(self, endpoint, body=None, raw=None):
        return self.client.put(endpoint, body=body, raw=raw)

    def state(self):
        r = self.get("vm.info")
        return r.json["state"] if r.status == 200 else r.status

    def wait_ready(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("simulator exited with %s: %s" % (
                    self.proc.returncode, self.stderr()))
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.sock)
                return self
            except OSError:
                time.sleep(0.002)
            finally:
                s.close()
        raise AssertionError("simulator socket %s not ready" % self.sock)

    def wait_exit(self, timeout=5.0):
        return self.proc.wait(timeout=timeout)

    def alive(self):
        return self.proc.poll() is None

    def stderr(self):
        try:
            with open(self.err) as f:
                return f.read()
        except OSError:
            return ""

    def logtext(self):
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return ""

    def kill(self):
        if self._client:
            self._client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass


@pytest.fixture
def workdir():
    # Short path: unix socket paths are limited to 108 bytes.
    d = tempfile.mkdtemp(prefix="chs-", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def launcher(workdir):
    return install_launcher(os.path.join(workdir, "cloud-hypervisor"))


def base_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHSIM_")}
    env.update(extra or {})
    return env


@pytest.fixture
def spawn(launcher, workdir):
    """spawn(*args, env={}, netns=None, sock=..., api=True, wait=True) -> Sim."""
    sims = []
    counter = [0]

    def _spawn(*args, env=None, netns=None, sock=None, api=True, wait=True, log=True):
        counter[0] += 1
        n = counter[0]
        sock = sock or os.path.join(workdir, "api%d.sock" % n)
        logf = os.path.join(workdir, "ch%d.log" % n)
        out = os.path.join(workdir, "ch%d.out" % n)
        err = os.path.join(workdir, "ch%d.err" % n)
        cmd = [launcher]
        if api:
            cmd += ["--api-socket", "path=%s" % sock]
        if log:
            cmd += ["--log-file", logf, "-v"]
        cmd += list(args)
        if netns:
            cmd = ["ip", "netns", "exec", netns] + cmd
        with open(out, "w") as fo, open(err, "w") as fe:
            proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL,
                                    env=base_env(env), cwd=workdir)
        sim = Sim(proc, sock, logf, out, err, workdir)
        sims.append(sim)
        if wait and api:
            sim.wait_ready()
        return sim

    yield _spawn
    for sim in sims:
        sim.kill()


class NetNs:
    def __init__(self, name):
        self.name = name

    def run(self, *cmd, check=True):
        return subprocess.run(["ip", "netns", "exec", self.name] + list(cmd), check=check,
                              capture_output=True, text=True)

    def add_tap(self, dev, multi_queue=False):
        cmd = ["ip", "tuntap", "add", "dev", dev, "mode", "tap", "vnet_hdr"]
        if multi_queue:
            cmd.append("multi_queue")
        self.run(*cmd)

    def link_flags(self, dev):
        out = self.run("ip", "-o", "link", "show", "dev", dev).stdout
        return out.split("<", 1)[1].split(">", 1)[0].split(",")


@pytest.fixture
def netns():
    if os.geteuid() != 0 or not shutil.which("ip") or not os.path.exists("/dev/net/tun"):
        pytest.skip("needs root, ip(8) and /dev/net/tun")
    name = "chsim-test-%s" % uuid.uuid4().hex[:8]
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip("cannot create a network namespace: %s" % r.stderr.strip())
    try:
        yield NetNs(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@pytest.fixture
def files(workdir):
    """Helper creating kernel/disk files in the work dir."""

    class Files:
        def kernel(self, name="vmlinux"):
            p = os.path.join(workdir, name)
            with open(p, "wb") as f:
                f.write(b"\x7fELF fake kernel")
            return p

        def disk(self, name="disk.raw", size=8 << 20):
            p = os.path.join(workdir, name)
            with open(p, "wb") as f:
                f.truncate(size)
            return p

        def path(self, name):
            return os.path.join(workdir, name)

    return Files()
