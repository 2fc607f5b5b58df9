"""The chaos harness's faults: a seeded schedule, one fault at a time, each
healed before the next (so one worker of each role is always reachable and
a request in flight always has somewhere to go):

  kill     SIGKILL a random worker; start it again (same id, same address:
           a new incarnation) after 0.5-3 s
  stop     SIGSTOP a random worker for 1-8 s (some pauses outlast the
           router's decode idle timeout and prefill timeout), then SIGCONT
  cut      the path between a random prefill and decode worker is cut for
           2-8 s (prohibit routes both ways; KV transfers between them fail)
  restart  SIGTERM a random worker (it drains and exits 0) and start it again

Every wait is bounded; every fault is logged with its time offset."""

import random
import signal
import threading
import time

KINDS = ("kill", "stop", "cut", "restart")


class FaultInjector:
    def __init__(self, cluster, net, seed, log, kinds=KINDS):
        self.cluster = cluster
        self.net = net
        self.rng = random.Random(seed)
        self.log = log
        self.kinds = tuple(kinds)
        self.counts = {k: 0 for k in self.kinds}
        self.events = []        # (offset s, description)
        self.failures = []      # what went wrong while injecting or healing
        self._stop = threading.Event()
        self._t0 = None

    def _note(self, what):
        off = time.monotonic() - self._t0
        self.events.append((round(off, 1), what))
        self.log("t+%.1fs %s" % (off, what))

    def _wait(self, seconds):
        """Sleeps up to `seconds`; False when asked to stop meanwhile."""
        return not self._stop.wait(seconds)

    def one(self):
        kind = self.rng.choice(self.kinds)
        workers = sorted(self.cluster.roles)
        wid = self.rng.choice(workers)
        c = self.cluster
        if kind == "kill":
            c.kill(wid)
            down = self.rng.uniform(0.5, 3.0)
            self._note("kill %s (down %.1fs)" % (wid, down))
            self._wait(down)  # heals even when stopping
            if not c.start_worker(wid):
                self.failures.append("%s did not come back after a kill" % wid)
        elif kind == "stop":
            pause = self.rng.uniform(1.0, 8.0)
            c.signal(wid, signal.SIGSTOP)
            self._note("SIGSTOP %s for %.1fs" % (wid, pause))
            self._wait(pause)
            c.signal(wid, signal.SIGCONT)
        elif kind == "cut":
            p = self.rng.choice([w for w in workers if c.roles[w] == "prefill"])
            d = self.rng.choice([w for w in workers if c.roles[w] == "decode"])
            span = self.rng.uniform(2.0, 8.0)
            self.net.cut(p, d)
            self._note("cut %s <-> %s for %.1fs" % (p, d, span))
            self._wait(span)
            self.net.heal(p, d)
        else:
            rc = c.terminate(wid, timeout=30)
            self._note("SIGTERM %s (exit %s); start again" % (wid, rc))
            if rc != 0:
                self.failures.append("%s exited %s on SIGTERM" % (wid, rc))
            if not c.start_worker(wid):
                self.failures.append("%s did not come back after a restart" % wid)
        self.counts[kind] += 1

    def run(self, duration, gap=(1.5, 4.0)):
        """Injects faults for `duration` seconds, in the calling thread: the
        workers it starts again must be children of a thread that outlives
        them (the tests' processes get SIGTERM when the thread that started
        them ends: PR_SET_PDEATHSIG)."""
        self._t0 = time.monotonic()
        end = self._t0 + duration
        while time.monotonic() < end and self._wait(self.rng.uniform(*gap)):
            if time.monotonic() >= end:
                break
            try:
                self.one()
            except Exception as e:  # noqa: BLE001 — reported, and the schedule goes on
                self.failures.append("fault injection raised %r" % (e,))

    def stop(self):
        self._stop.set()
