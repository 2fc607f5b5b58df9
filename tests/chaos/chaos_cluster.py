"""The chaos harness's cluster: a router and prefill/decode workers, each
in its own network namespace (tests/e2e/netns.py) on a fixed port, so a
worker killed or stopped for good can be started again under the same id
at the same address (as `tandem up` and Kubernetes restart them: a new
incarnation). Tracks every process's peak resident memory.

Every process is stopped by its PID (stop_all, also on failure); every wait
is bounded."""

import os
import signal
import threading
import time

from netns import NsProc

ROUTER_PORT = 7000
WORKER_PORT = 7001
CLUSTER_PORT = 7002  # the router's cluster listener: the workers' --router
METRICS_PORT = 9100


def rss_kib(pid, field="VmRSS"):
    """`field` of /proc/<pid>/status in KiB (0 when the process is gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class ChaosCluster:
    """Router + workers of `roles` ({worker id: "prefill"|"decode"}), one
    namespace each (net.ns[id], net.ns["router"])."""

    def __init__(self, net, bin_dir, work, env, roles, router_flags, worker_flags, certs):
        self.net = net
        self.bin_dir = bin_dir
        self.work = work
        self.env = env
        self.roles = dict(roles)
        self.router_flags = list(router_flags)
        self.worker_flags = dict(worker_flags)  # role -> flags
        self.certs = certs  # the `tandem certs` directory: mTLS inside the cluster
        self.router = None
        self.procs = {}        # worker id -> NsProc (the current incarnation)
        self.all_procs = []    # every process ever started (for stop_all)
        self.incarnations = {wid: 0 for wid in self.roles}
        self.peak_kib = {}     # "router" | "prefill" | "decode" -> peak VmRSS seen
        self.mu = threading.Lock()
        self._sampling = False
        self._sampler = None

    @property
    def router_addr(self):
        return "%s:%d" % (self.net.addr["router"], ROUTER_PORT)

    @property
    def cluster_addr(self):
        """The router's cluster listener (WorkerRegistry), where the workers register."""
        return "%s:%d" % (self.net.addr["router"], CLUSTER_PORT)

    @property
    def metrics_url(self):
        return "http://%s:%d/metrics" % (self.net.addr["router"], METRICS_PORT)

    def worker_addr(self, wid):
        return "%s:%d" % (self.net.addr[wid], WORKER_PORT)

    def tls_flags(self, stem):
        """The mTLS flags of the role whose files are <certs>/<stem>.crt/.key."""
        return ["--tls-ca", os.path.join(self.certs, "ca.crt"), "--tls-cert", os.path.join(self.certs, stem + ".crt"),
                "--tls-key", os.path.join(self.certs, stem + ".key")]

    def _bin(self, name):
        return os.path.join(self.bin_dir, name)

    def start_router(self, timeout=60):
        self.router = NsProc("router", self.net.ns["router"],
                             [self._bin("tandem-router"), "--host", self.net.addr["router"], "--port",
                              str(ROUTER_PORT), "--cluster-port", str(CLUSTER_PORT), "--metrics-port",
                              str(METRICS_PORT)] + self.tls_flags("router") + self.router_flags,
                             self.work, self.env)
        self.all_procs.append(self.router)
        return self.router.wait_line(r"tandem-router: listening on ", timeout) is not None

    def start_worker(self, wid, timeout=90):
        """Starts (or starts again) worker `wid`; True once it listens."""
        role = self.roles[wid]
        with self.mu:
            self.incarnations[wid] += 1
            n = self.incarnations[wid]
        p = NsProc("%s.%d" % (wid, n), self.net.ns[wid],
                   [self._bin("tandem-%s-worker" % role), "--host", self.net.addr[wid], "--port", str(WORKER_PORT),
                    "--router", self.cluster_addr, "--worker-id", wid] + self.tls_flags("%s-worker" % role)
                   + self.worker_flags[role],
                   self.work, self.env)
        with self.mu:
            self.procs[wid] = p
            self.all_procs.append(p)
        return p.wait_line(r"listening on ", timeout) is not None

    def signal(self, wid, sig):
        p = self.procs[wid]
        if p.alive():
            os.kill(p.pid, sig)

    def kill(self, wid):
        """SIGKILL, reaped."""
        p = self.procs[wid]
        self._note_peak(p, self.roles[wid])
        if p.alive():
            p.proc.send_signal(signal.SIGKILL)
            p.proc.wait(timeout=30)
        p.stop()

    def terminate(self, wid, timeout=30):
        """SIGTERM (the worker drains and exits); returns its exit code."""
        p = self.procs[wid]
        self._note_peak(p, self.roles[wid])
        return p.stop(wait=timeout)

    def _note_peak(self, p, kind):
        kib = max(rss_kib(p.pid, "VmHWM"), rss_kib(p.pid))
        with self.mu:
            self.peak_kib[kind] = max(self.peak_kib.get(kind, 0), kib)

    def start_sampling(self, period=0.5):
        """A thread that records every live process's resident memory."""
        self._sampling = True

        def loop():
            while self._sampling:
                self._note_peak(self.router, "router")
                with self.mu:
                    current = list(self.procs.items())
                for wid, p in current:
                    self._note_peak(p, self.roles[wid])
                time.sleep(period)

        self._sampler = threading.Thread(target=loop, daemon=True)
        self._sampler.start()

    def stop_sampling(self):
        self._sampling = False
        if self._sampler is not None:
            self._sampler.join(timeout=5)

    def alive(self):
        """{name: alive} of the router and every worker's current incarnation."""
        out = {"router": self.router is not None and self.router.alive()}
        for wid, p in self.procs.items():
            out[wid] = p.alive()
        return out

    def stop_all(self):
        """SIGCONT (a stopped process cannot exit), then SIGTERM and a bounded
        wait, then SIGKILL, for every process started; returns the names of
        those that did not exit 0 on SIGTERM (the current incarnations only)."""
        bad = []
        current = set(id(p) for p in self.procs.values()) | {id(self.router)}
        for p in reversed(self.all_procs):
            if p.alive():
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except OSError:
                    pass
            was_alive = p.alive()
            rc = p.stop(wait=20)
            if id(p) in current and (not was_alive or rc != 0):
                bad.append("%s (rc %s, alive %s)" % (p.name, rc, was_alive))
        return bad
