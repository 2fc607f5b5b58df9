"""Processes of the cluster test: Proc (each one in STARTED, so main can
stop whatever a stage left running), FOREIGN_PIDS (the processes `tandem up`
started for us), pid_alive/wait_pids_gone, bin_path/env_with, and the two
ways to start a cluster: UpCluster (`tandem up`) and ManualCluster
(tandem-router and the workers one by one)."""

import os
import re
import time

import cluster_state as state
import e2e_util
from cluster_state import channel

STARTED = []        # every Proc this test started
FOREIGN_PIDS = []   # (pid, name): processes `tandem up` started for us


class Proc(e2e_util.Proc):
    """One process we started: stdout lines queued, stderr to <work>/<name>.log."""

    def __init__(self, name, cmd, env=None):
        super().__init__(name, cmd, os.path.join(state.ARGS.work, name + ".log"), env=env)
        STARTED.append(self)


def pid_alive(pid):
    """True when `pid` is a live (not zombie) tandem process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read()
    except OSError:
        return False
    letter = stat.rsplit(")", 1)[1].split()[0]
    return letter != "Z" and b"tandem" in cmd


def wait_pids_gone(pids, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if pid_alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if pid_alive(p)]


def bin_path(name):
    return os.path.join(state.ARGS.bin_dir, name)


def env_with(ucx_tls):
    env = dict(os.environ)
    env["UCX_TLS"] = ucx_tls
    return env


def wait_router_lines(router, addr_rx, timeout):
    """(public address, cluster address) from a tandem-router's two lines
    (the cluster listener's comes first); None for a line not seen in time."""
    m = router.wait_line(r"tandem-router: cluster listener on (%s).*" % addr_rx, timeout)
    cluster = m.group(1) if m else None
    router.cluster_line = m.group(0) if m else ""  # says mTLS or PLAINTEXT
    m = router.wait_line(r"tandem-router: listening on (%s)" % addr_rx, timeout) if cluster else None
    return (m.group(1) if m else None), cluster


class UpCluster:
    """`tandem up --port 0 ...`: the router's and workers' pids and addresses
    from its output; `addr` is the public endpoint, `cluster_addr` the
    router's cluster listener (the WorkerRegistry)."""

    def __init__(self, name, extra, ucx_tls, drop_env=(), tls="test-ca"):
        self.name = name
        env = env_with(ucx_tls)
        for k in drop_env:  # to see what the launcher sets by itself
            env.pop(k, None)
        # The test's CA (cluster_state.CERTS), so the test can call the
        # workers and the registry; `tls=None` leaves `tandem up` to its
        # ephemeral CA, `tls="insecure"` asks for plaintext.
        tls_args = {"test-ca": ["--cluster-certs", state.CERTS], None: [],
                    "insecure": ["--insecure-cluster"]}[tls]
        self.proc = Proc(name, [bin_path("tandem"), "up", "--port", "0"] + tls_args + extra, env=env)
        self.members = {}  # name -> (pid, addr)
        self.addr = None
        self.cluster_addr = None
        self.tls_line = ""  # "tandem up: cluster gRPC over mTLS (...)" or "... in PLAINTEXT ..."

    def wait_ready(self, timeout=120):
        rx = re.compile(r"^tandem up: (\S+) pid (\d+) on (127\.0\.0\.1:\d+)")
        cluster_rx = re.compile(r", cluster listener on (127\.0\.0\.1:\d+)")
        ready = re.compile(r"^tandem up: ready on (127\.0\.0\.1:\d+)")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.next_line(deadline)
            if line is None:
                return False
            m = rx.search(line)
            if m:
                self.members[m.group(1)] = (int(m.group(2)), m.group(3))
                c = cluster_rx.search(line)
                if m.group(1) == "router" and c:
                    self.cluster_addr = c.group(1)
                FOREIGN_PIDS.append((int(m.group(2)), "%s/%s" % (self.name, m.group(1))))
                continue
            if line.startswith("tandem up: cluster gRPC "):
                self.tls_line = line.strip()
                continue
            m = ready.search(line)
            if m:
                self.addr = m.group(1)
                return True
        return False

    def addrs(self, prefix):
        return [a for n, (p, a) in sorted(self.members.items()) if n.startswith(prefix)]

    def pids(self):
        return [p for p, a in self.members.values()]


class ManualCluster:
    """tandem-router and workers started one by one (finer control: kill one,
    odd flags). The router listens on two free ports: `addr` (public) and
    `cluster_addr` (WorkerRegistry: the workers' --router)."""

    def __init__(self, name, ucx_tls, router_extra=(), host="127.0.0.1", insecure=False):
        self.name = name
        self.insecure = insecure  # --insecure-cluster everywhere, else the test CA's mTLS
        self.env = env_with(ucx_tls)
        self.host = host
        # "[::1]:port" for an IPv6 host, as the binaries print and advertise it.
        self.addr_rx = re.escape("[%s]" % host if ":" in host else host) + r":\d+"
        self.router = Proc(name + "-router", [bin_path("tandem-router"), "--host", host, "--port", "0",
                                              "--cluster-port", "0"] + self.tls_flags("router")
                             + list(router_extra), env=self.env)
        self.workers = {}  # worker id -> (Proc, addr)
        self.addr, self.cluster_addr = wait_router_lines(self.router, self.addr_rx, 60)

    def start_workers(self, specs, timeout=90):
        """specs: [(kind 'prefill'|'decode', worker_id, extra flags)]; True when all listen."""
        started = []
        for kind, wid, extra in specs:
            p = Proc("%s-%s" % (self.name, wid),
                     [bin_path("tandem-%s-worker" % kind), "--host", self.host, "--port", "0", "--router",
                      self.cluster_addr, "--worker-id", wid] + self.tls_flags("%s-worker" % kind)
                     + list(extra), env=self.env)
            started.append((wid, p))
        ok = True
        for wid, p in started:
            m = p.wait_line(r"listening on (%s)" % self.addr_rx, timeout)
            if not m:
                ok = False
                continue
            self.workers[wid] = (p, m.group(1))
        return ok

    def tls_flags(self, role):
        return ["--insecure-cluster"] if self.insecure else state.tls_flags(role)

    def channel(self, addr):
        """The channel the test calls a worker or the registry of this cluster with."""
        return state.public_channel(addr) if self.insecure else channel(addr)

    def wait_registered(self, n_prefill, n_decode, timeout=30):
        stub = state.wpb2_grpc.WorkerRegistryStub(self.channel(self.cluster_addr))
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                resp = stub.ListWorkers(state.wpb2.ListWorkersRequest(), timeout=2)
                p = sum(1 for w in resp.workers if w.role == state.wpb2.WORKER_ROLE_PREFILL)
                d = sum(1 for w in resp.workers if w.role == state.wpb2.WORKER_ROLE_DECODE)
                last = (p, d)
                if p >= n_prefill and d >= n_decode:
                    return True, last
            except Exception as e:  # noqa: BLE001 — not up yet
                last = e
            time.sleep(0.1)
        return False, last

    def addr_of(self, wid):
        return self.workers[wid][1]

    def procs(self):
        return [self.router] + [p for p, a in self.workers.values()]

    def stop(self):
        for p, a in list(self.workers.values())[::-1]:
            p.stop()
        self.router.stop()
