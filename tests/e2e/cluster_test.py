#!/usr/bin/python3
"""End-to-end checks of the disaggregated cluster (router + prefill + decode
workers, KV over UCX) against `tandem generate`, through the Python client.

Run by CTest (label e2e, tests/e2e/cluster.cmake). Every process it starts
(`tandem up`, `tandem serve`, tandem-router, tandem-prefill-worker,
tandem-decode-worker) listens on 127.0.0.1 (::1 in the ipv6 stage) only and
is stopped by its PID in a finally block (SIGTERM, bounded wait, SIGKILL);
at the end it checks that none
is left, including the workers `tandem up` started. Every wait is bounded.
Prints one PASS/FAIL line per check, then "N passed, M failed"; exits
non-zero on any failure.

The numbered checks follow the acceptance of the cluster issue and the
invariants of DESIGN.md:
  1  32 concurrent mixed requests equal `tandem generate` through `tandem up`
     (1P/1D, UCX tcp), `tandem serve`, and `tandem up` 2P/2D (UCX sm/cma)
  2  seeded sampling through the cluster equals `tandem generate --seed`
  3  invariant 1: prefill kv_transfer_bytes_total == sum of the prompts' block
     spans, exactly; the Admit reply (all the KV "metadata" gRPC carries) < 4 KiB
  4  invariant 2: a 20-block decode pool queues 12 big requests (all exact);
     --max-queued 1 gives RESOURCE_EXHAUSTED to the overflow only
  5  invariant 3: blocks and reservations back to start after completion,
     cancellation, deadline and stop string; 5e: a request abandoned while
     its prefill is queued must not get its KV shipped into freed blocks
  6  invariant 4: the first chunk carries the prefill's one token
  7  fault: SIGKILL of one of two prefill workers mid-run; 7b: of one of two
     decode workers (new requests must go to the survivor)
  8  malformed requests: exact status code, field in the message
  9  clients/python/example.py streams through the cluster
  10 grpc.health.v1 SERVING on the router (once its workers registered) and
     on every worker
  tp tensor-parallel workers: prefill TP 1->decode TP 2, 2->1, 2->4 (KV heads
     replicated) give the single-process tokens; each decode rank gets its
     heads' bytes exactly; the pool is back to start

  health  the router's grpc.health.v1 follows its workers (NOT_SERVING alone,
     SERVING with 1P+1D, NOT_SERVING when the only decode worker dies)
  drain SIGTERM mid-stream to the router, then to a decode worker: streams
     finish exactly, new requests UNAVAILABLE, exit 0
  ipv6 --host ::1 end to end (skipped without IPv6 loopback)

  cluster_test.py --bin-dir build/bin --source . --work DIR [--only a,serve,c,tp,bp,stale,fault,health,drain,ipv6]
"""

import argparse
import json
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_util import PASSAGES, decode, field_bytes, make_prompts, malformed_requests, varint  # noqa: E402

PASSED, FAILED = [], []
_print_lock = threading.Lock()
ARGS = None
tc = None          # tandem_client, imported in main()
wpb2 = None        # tandem.v1.worker_pb2
wpb2_grpc = None   # tandem.v1.worker_pb2_grpc


def check(name, cond, detail=""):
    (PASSED if cond else FAILED).append(name)
    with _print_lock:
        print(("PASS " if cond else "FAIL ") + name + ("" if cond else ": " + str(detail)[:2500]), flush=True)
    return cond


def log(msg):
    with _print_lock:
        print("  .. " + msg, flush=True)


def run(cmd, timeout=120, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return p.returncode, p.stdout, p.stderr


# ------------------------------------------------------------ wire helpers
# Hand-encoded grpc.health.v1 (no stubs for it on this machine).

def health_check(addr, timeout=5):
    """grpc.health.v1.Health/Check('') as [(field, value)] (SERVING is [(1, 1)])."""
    import grpc
    ch = grpc.insecure_channel(addr)
    try:
        call = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
        return decode(call(b"", timeout=timeout))
    finally:
        ch.close()


# ------------------------------------------------------------ processes

STARTED = []        # every Proc this test started
FOREIGN_PIDS = []   # (pid, name): processes `tandem up` started for us


def _pdeathsig():
    try:  # children die with this test even if it is SIGKILLed
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        return lambda: libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        return None


class Proc:
    """One process we started: stdout lines queued, stderr to a log file."""

    def __init__(self, name, cmd, env=None):
        self.name = name
        self.log_path = os.path.join(ARGS.work, name + ".log")
        self.log = open(self.log_path, "w")
        self.lines = queue.Queue()
        self.stdout = []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
                                     preexec_fn=_pdeathsig())
        STARTED.append(self)
        threading.Thread(target=self._drain, daemon=True).start()

    @property
    def pid(self):
        return self.proc.pid

    def _drain(self):
        for line in self.proc.stdout:
            self.stdout.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_line(self, pattern, timeout=60):
        """The match of the first stdout line matching `pattern` (None on exit or timeout)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if line is None:
                return None
            m = rx.search(line)
            if m:
                return m
        return None

    def alive(self):
        return self.proc.poll() is None

    def stop(self, wait=15, sig=signal.SIGTERM):
        """`sig`, then SIGKILL after `wait` s; returns the exit code."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        if not self.log.closed:
            self.log.close()
        return self.proc.returncode

    def log_tail(self, n=3000):
        try:
            with open(self.log_path) as f:
                return f.read()[-n:]
        except OSError:
            return ""


def pid_alive(pid):
    """True when `pid` is a live (not zombie) tandem process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z" and b"tandem" in cmd


def wait_pids_gone(pids, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if pid_alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if pid_alive(p)]


def bin_path(name):
    return os.path.join(ARGS.bin_dir, name)


def env_with(ucx_tls):
    env = dict(os.environ)
    env["UCX_TLS"] = ucx_tls
    return env


class UpCluster:
    """`tandem up --port 0 ...`: the router's and workers' pids and addresses from its output."""

    def __init__(self, name, extra, ucx_tls):
        self.name = name
        self.proc = Proc(name, [bin_path("tandem"), "up", "--port", "0"] + extra, env=env_with(ucx_tls))
        self.members = {}  # name -> (pid, addr)
        self.addr = None

    def wait_ready(self, timeout=120):
        rx = re.compile(r"^tandem up: (\S+) pid (\d+) on (127\.0\.0\.1:\d+)")
        ready = re.compile(r"^tandem up: ready on (127\.0\.0\.1:\d+)")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.proc.lines.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if line is None:
                return False
            m = rx.search(line)
            if m:
                self.members[m.group(1)] = (int(m.group(2)), m.group(3))
                FOREIGN_PIDS.append((int(m.group(2)), "%s/%s" % (self.name, m.group(1))))
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
    """tandem-router and workers started one by one (finer control: kill one, odd flags)."""

    def __init__(self, name, ucx_tls, router_extra=(), host="127.0.0.1"):
        self.name = name
        self.env = env_with(ucx_tls)
        self.host = host
        # "[::1]:port" for an IPv6 host, as the binaries print and advertise it.
        self.addr_rx = re.escape("[%s]" % host if ":" in host else host) + r":\d+"
        self.router = Proc(name + "-router", [bin_path("tandem-router"), "--host", host, "--port", "0"]
                           + list(router_extra), env=self.env)
        self.workers = {}  # worker id -> (Proc, addr)
        m = self.router.wait_line(r"tandem-router: listening on (%s)" % self.addr_rx, 60)
        self.addr = m.group(1) if m else None

    def start_workers(self, specs, timeout=90):
        """specs: [(kind 'prefill'|'decode', worker_id, extra flags)]; True when all listen."""
        started = []
        for kind, wid, extra in specs:
            p = Proc("%s-%s" % (self.name, wid),
                     [bin_path("tandem-%s-worker" % kind), "--host", self.host, "--port", "0", "--router",
                      self.addr, "--worker-id", wid] + list(extra), env=self.env)
            started.append((wid, p))
        ok = True
        for wid, p in started:
            m = p.wait_line(r"listening on (%s)" % self.addr_rx, timeout)
            if not m:
                ok = False
                continue
            self.workers[wid] = (p, m.group(1))
        return ok

    def wait_registered(self, n_prefill, n_decode, timeout=30):
        stub = wpb2_grpc.WorkerRegistryStub(channel(self.addr))
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                resp = stub.ListWorkers(wpb2.ListWorkersRequest(), timeout=2)
                p = sum(1 for w in resp.workers if w.role == wpb2.WORKER_ROLE_PREFILL)
                d = sum(1 for w in resp.workers if w.role == wpb2.WORKER_ROLE_DECODE)
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


# ------------------------------------------------------------ worker API

_channels = {}


def channel(addr):
    import grpc
    if addr not in _channels:
        _channels[addr] = grpc.insecure_channel(addr)
    return _channels[addr]


def close_channels():
    for ch in _channels.values():
        ch.close()
    _channels.clear()


def decode_stub(addr):
    return wpb2_grpc.DecodeWorkerStub(channel(addr))


def prefill_stub(addr):
    return wpb2_grpc.PrefillWorkerStub(channel(addr))


def stats(addr, role):
    stub = decode_stub(addr) if role == "decode" else prefill_stub(addr)
    return stub.Stats(wpb2.StatsRequest(), timeout=5)


def snapshot(decode_addrs, prefill_addrs):
    """Every worker's Stats (waits, bounded, until each reports its pool)."""
    deadline = time.monotonic() + 5
    for a, role in [(a, "decode") for a in decode_addrs] + [(a, "prefill") for a in prefill_addrs]:
        while stats(a, role).kv_blocks_total == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
    return ({a: stats(a, "decode") for a in decode_addrs}, {a: stats(a, "prefill") for a in prefill_addrs})


def brief(s):
    return "used %d free %d total %d reservations %d running %d waiting %d" % (
        s.kv_blocks_used, s.kv_blocks_free, s.kv_blocks_total, s.num_reservations, s.num_running, s.num_waiting)


def wait_released(base, timeout=15):
    """Polls every worker in `base` (a snapshot) until its used blocks and
    reservations are back to the baseline and nothing runs or waits.
    Returns (ok, description of the last state)."""
    dbase, pbase = base
    deadline = time.monotonic() + timeout
    desc = ""
    while True:
        bad = []
        for role, basemap in (("decode", dbase), ("prefill", pbase)):
            for a, b in basemap.items():
                try:
                    s = stats(a, role)
                except Exception as e:  # noqa: BLE001
                    bad.append("%s %s: %s" % (role, a, e))
                    continue
                if (s.kv_blocks_used != b.kv_blocks_used or s.num_reservations != b.num_reservations
                        or s.num_running != 0 or s.num_waiting != 0
                        or s.kv_blocks_used + s.kv_blocks_free != s.kv_blocks_total):
                    bad.append("%s %s: %s (start: %s)" % (role, a, brief(s), brief(b)))
        desc = "; ".join(bad)
        if not bad:
            return True, ""
        if time.monotonic() > deadline:
            return False, desc
        time.sleep(0.1)


def probe_admit(decode_addr, request_id="probe-admit"):
    """Admits a 3-token prompt directly on a decode worker, releases it.
    Returns (AdmitResponse, its serialized size, ReleaseResponse)."""
    stub = decode_stub(decode_addr)
    samp = wpb2.ResolvedSampling(temperature=0, top_p=1, top_k=0, min_p=0, repetition_penalty=1, max_tokens=1,
                                 seed=1)
    resp = stub.Admit(wpb2.AdmitRequest(request_id=request_id, prompt_token_ids=[5, 6, 7], sampling=samp),
                      timeout=10)
    rel = stub.Release(wpb2.ReleaseRequest(request_id=request_id), timeout=10)
    return resp, resp.ByteSize(), rel


# ------------------------------------------------------------ prompts and references

# (max_tokens, ignore_eos, stop_token_ids) groups: `tandem generate` takes one
# of each per run. Newline stop ids ("\n", "\n\n") end some requests early.
GROUPS = [(8, False, []), (24, True, []), (40, False, [10, 272]), (48, True, [10])]


def generate_many(prompts, max_tokens, ignore_eos, stop_ids, tag, extra=()):
    path = os.path.join(ARGS.work, "prompts_%s.txt" % tag)
    with open(path, "w") as f:
        f.write("\n".join(prompts) + "\n")
    cmd = [bin_path("tandem"), "generate", "--prompts-file", path, "--temperature", "0",
           "--max-tokens", str(max_tokens), "--json"] + (["--ignore-eos"] if ignore_eos else []) + list(extra)
    if stop_ids:
        cmd += ["--stop-token-ids", ",".join(map(str, stop_ids))]
    rc, out, err = run(cmd)
    if rc != 0:
        raise RuntimeError("generate failed (%d): %s" % (rc, err))
    rows = [json.loads(l) for l in out.splitlines() if l.strip()]
    rows = [r for r in rows if "summary" not in r]
    rows.sort(key=lambda r: int(r["request_id"]))
    if len(rows) != len(prompts):
        raise RuntimeError("generate printed %d results for %d prompts" % (len(rows), len(prompts)))
    return rows


def generate_one(prompt=None, ids=None, flags=()):
    cmd = [bin_path("tandem"), "generate", "--json"]
    cmd += ["--prompt", prompt] if prompt is not None else ["--prompt-ids", ",".join(map(str, ids))]
    rc, out, err = run(cmd + list(flags))
    if rc != 0:
        raise RuntimeError("generate failed (%d): %s" % (rc, err))
    return json.loads(out.splitlines()[0])


def mixed_expected(prompts, extra=(), tag=""):
    expected = [None] * len(prompts)
    for g, (mt, ie, stop_ids) in enumerate(GROUPS):
        idx = [i for i in range(len(prompts)) if i % len(GROUPS) == g]
        rows = generate_many([prompts[i] for i in idx], mt, ie, stop_ids, "g%d%s" % (g, tag), extra)
        for i, r in zip(idx, rows):
            expected[i] = r
    return expected


def big_prompt(i, n=200):
    """A distinct prompt of n token ids (its first block differs from every other's)."""
    return [5 + ((i * 31 + j * (7 + i % 5)) % 1900) for j in range(n)]


def concurrent(fn, n, timeout=180):
    """Runs fn(i) for i < n at once (a barrier lines them up); results or exceptions."""
    barrier = threading.Barrier(n)

    def one(i):
        barrier.wait(timeout=60)
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        out = []
        for f in futures:
            try:
                out.append(f.result(timeout=timeout))
            except Exception as e:  # noqa: BLE001
                out.append(e)
    return out


def same_as(got, want, request_id=None):
    """None when `got` (a Completion) equals the `tandem generate` row `want`, else why not."""
    if isinstance(got, Exception):
        return "raised %r" % (got,)
    want_usage = tc.Usage(len(want["prompt_token_ids"]), len(want["token_ids"]))
    mine = (got.token_ids, got.text, got.finish_reason, got.usage)
    theirs = (want["token_ids"], want["text"], want["finish_reason"], want_usage)
    if mine != theirs:
        return "got %r\n     want %r" % (mine, theirs)
    if request_id is not None and got.request_id != request_id:
        return "request_id %r, want %r" % (got.request_id, request_id)
    return None


# ------------------------------------------------------------ checks

def check_health(label, addrs):
    """10. grpc.health.v1 SERVING on each address."""
    for what, addr in addrs:
        try:
            resp = health_check(addr)
            check("10: %s: Health/Check on the %s (%s) -> SERVING" % (label, what, addr), resp == [(1, 1)], resp)
        except Exception as e:  # noqa: BLE001
            check("10: %s: Health/Check on the %s (%s) -> SERVING" % (label, what, addr), False, e)


def check_mixed32(label, client, prompts, expected):
    """1. 32 concurrent mixed requests equal `tandem generate` exactly."""
    def one(i):
        mt, ie, stop_ids = GROUPS[i % len(GROUPS)]
        kw = dict(temperature=0, max_tokens=mt, ignore_eos=ie, stop_token_ids=stop_ids, timeout=120,
                  request_id="m-%d" % i)
        if i % 8 == 3:  # some as token ids
            return client.generate_text(prompt_token_ids=expected[i]["prompt_token_ids"], **kw)
        return client.generate_text(prompts[i], **kw)

    t0 = time.monotonic()
    results = concurrent(one, len(prompts))
    bad = []
    for i, (got, want) in enumerate(zip(results, expected)):
        why = same_as(got, want, "m-%d" % i)
        if why:
            bad.append("#%d %r %s: %s" % (i, prompts[i][:30], GROUPS[i % 4], why))
    check("1: %s: %d concurrent mixed requests equal `tandem generate` (tokens, text, finish, usage, id) "
          "[%.1fs]" % (label, len(prompts), time.monotonic() - t0), not bad,
          "\n  ".join(bad[:4]) + "\n  (%d of %d bad)" % (len(bad), len(prompts)))
    return results


def kv_bytes_expected(expected, layout):
    bs = layout.block_size
    return sum(math.ceil(len(r["prompt_token_ids"]) / bs) for r in expected) * layout.num_layers \
        * layout.block_span_bytes


def check_layout(label, decode_addr, model_cfg, dtype_bytes, dtype_name):
    """3. The Admit reply: small, a layout that matches the model config."""
    resp, size, rel = probe_admit(decode_addr, "probe-%s" % label)
    lay = resp.destination.ranks[0].layout
    check("3: %s: the Admit reply (KV destination) is small: %d bytes < 4 KiB" % (label, size), size < 4096, size)
    want_span = 2 * model_cfg["num_key_value_heads"] * lay.block_size * model_cfg["head_dim"] * dtype_bytes
    check("3: %s: Admit layout: %d layers, %s, span %d = 2*kv_heads*block_size*head_dim*%d, 1 block for 3+1 "
          "tokens, transport ucx" % (label, model_cfg["num_hidden_layers"], dtype_name, want_span, dtype_bytes),
          lay.num_layers == model_cfg["num_hidden_layers"] and lay.dtype == dtype_name
          and lay.block_span_bytes == want_span and lay.block_size == 16
          and lay.num_kv_heads == model_cfg["num_key_value_heads"] and lay.head_dim == model_cfg["head_dim"]
          and len(resp.destination.block_ids) == 1 and resp.destination.transport == "ucx"
          and len(resp.destination.ranks) == 1 and len(resp.destination.ranks[0].memory_descriptor) > 0,
          resp.destination)
    check("3: %s: Release of the probe reservation -> released" % label, rel.released, rel)
    return lay


def check_kv_bytes(label, prefill_addrs, before, expected, layout, want_all_used=False):
    """3. Invariant 1: exactly the prompts' block spans moved over UCX."""
    after = {a: stats(a, "prefill").kv_transfer_bytes_total for a in prefill_addrs}
    delta = {a: after[a] - before[a] for a in prefill_addrs}
    want = kv_bytes_expected(expected, layout)
    check("3: %s: prefill kv_transfer_bytes_total grew by exactly sum(ceil(prompt/%d)) * %d layers * %d bytes "
          "= %d" % (label, layout.block_size, layout.num_layers, layout.block_span_bytes, want),
          sum(delta.values()) == want, "grew by %s (sum %d), want %d" % (delta, sum(delta.values()), want))
    if want_all_used:
        check("3: %s: every prefill worker shipped KV (%s)" % (label, sorted(delta.values())),
              all(v > 0 for v in delta.values()), delta)


def check_first_chunk(label, client):
    """6. Invariant 4: the first chunk is the prefill's single token."""
    prompt = "JULIET: O Romeo, Romeo! wherefore art thou Romeo?"
    want = generate_one(prompt, flags=["--temperature", "0", "--max-tokens", "48", "--ignore-eos"])
    chunks = list(client.generate(prompt, temperature=0, max_tokens=48, ignore_eos=True, timeout=60))
    ids = [t for c in chunks for t in c.token_ids]
    check("6: %s: a 48-token request streams in >= 2 chunks (%d)" % (label, len(chunks)), len(chunks) >= 2,
          len(chunks))
    check("6: %s: the first chunk carries exactly one token (the prefill's), no finish" % label,
          chunks and len(chunks[0].token_ids) == 1 and chunks[0].finish_reason is None
          and chunks[0].token_ids[0] == want["token_ids"][0], chunks[:2])
    check("6: %s: finish and usage on the last chunk only; tokens and text equal generate" % label,
          all(c.finish_reason is None and c.usage is None for c in chunks[:-1])
          and chunks[-1].finish_reason == "length"
          and chunks[-1].usage == tc.Usage(len(want["prompt_token_ids"]), 48)
          and ids == want["token_ids"] and "".join(c.text for c in chunks) == want["text"],
          "%s %r vs %s %r" % (ids, "".join(c.text for c in chunks), want["token_ids"], want["text"]))


def check_seeded(label, client, ref=()):
    """2. Seeded sampling: prefill and decode share one random stream."""
    prompt = "LADY MACBETH: Out, damned spot! out, I say!"
    cases = [(["--temperature", "0.8", "--seed", "1234"], dict(temperature=0.8, seed=1234)),
             (["--temperature", "1.0", "--seed", "7", "--top-k", "40", "--top-p", "0.9"],
              dict(temperature=1.0, seed=7, top_k=40, top_p=0.9))]
    for flags, kw in cases:
        want = generate_one(prompt, flags=flags + ["--max-tokens", "48", "--ignore-eos"] + list(ref))
        got = client.generate_text(prompt, max_tokens=48, ignore_eos=True, timeout=60, **kw)
        check("2: %s: seeded sampling %s equals `generate %s`" % (label, kw, " ".join(flags)),
              got.token_ids == want["token_ids"] and got.text == want["text"],
              "%s vs %s" % (got.token_ids, want["token_ids"]))
    # Batched with others, the same seed still gives the same tokens.
    want = generate_one(prompt, flags=cases[0][0] + ["--max-tokens", "48", "--ignore-eos"] + list(ref))

    def one(i):
        if i == 0:
            return client.generate_text(prompt, temperature=0.8, seed=1234, max_tokens=48, ignore_eos=True,
                                        timeout=60)
        return client.generate_text(PASSAGES[i % 4], temperature=1.0, max_tokens=24, ignore_eos=True, timeout=60)

    res = concurrent(one, 5)
    check("2: %s: the seeded request batched with 4 unseeded ones is unchanged" % label,
          not isinstance(res[0], Exception) and res[0].token_ids == want["token_ids"]
          and all(not isinstance(r, Exception) for r in res[1:]), res)


def check_cancel(label, client, base, ref=()):
    """5b. Ten streams closed mid-stream while 4 greedy requests run: those
    are exact, and every block comes back."""
    prompts = [PASSAGES[i % 4][:40 + 9 * i] for i in range(4)]
    wants = generate_many(prompts, 24, True, [], "cancelbg", ref)
    bg_results = [None] * 4
    got_chunks = []

    def background(i):
        bg_results[i] = client.generate_text(prompts[i], temperature=0, max_tokens=24, ignore_eos=True, timeout=90)

    def cancelling(i):
        with client.generate(PASSAGES[i % 4][:25 + i], temperature=0.7, max_tokens=120, ignore_eos=True,
                             timeout=60) as s:
            got_chunks.append(next(s))
            if i % 2:
                got_chunks.append(next(s))

    def one(i):
        try:
            return background(i) if i < 4 else cancelling(i - 4)
        except Exception as e:  # noqa: BLE001
            return e

    res = concurrent(one, 14)
    errs = [r for r in res if isinstance(r, Exception)]
    check("5b: %s: 10 streams closed after 1-2 chunks, 4 run beside them: no errors" % label, not errs, errs[:3])
    bad = [same_as(bg_results[i], wants[i]) for i in range(4) if same_as(bg_results[i], wants[i])]
    check("5b: %s: the requests running beside the cancelled ones equal generate" % label, not bad, bad[:2])
    check("5b: %s: the cancelled streams had delivered tokens" % label,
          len(got_chunks) == 15 and all(len(c.token_ids) >= 1 for c in got_chunks[:1]), len(got_chunks))
    ok, desc = wait_released(base)
    check("5b: %s: after 10 cancellations every pool is back to start (used, reservations), nothing running"
          % label, ok, desc)


def check_deadline(label, client, base):
    """5c. Deadlines passing mid-stream (and before the first token)."""
    mid, early, finished, other = 0, 0, 0, []
    for t in (0.001, 0.01, 0.03, 0.06, 0.1, 0.15, 0.3):
        n = 0
        try:
            for c in client.generate("ROMEO:", temperature=0, max_tokens=200, ignore_eos=True, timeout=t):
                n += len(c.token_ids)
            finished += 1  # faster than its deadline: fine
        except tc.DeadlineExceededError:
            if n:
                mid += 1
            else:
                early += 1
        except Exception as e:  # noqa: BLE001
            other.append("timeout %.3f: %r" % (t, e))
    check("5c: %s: deadlines end streams with DEADLINE_EXCEEDED (%d mid-stream, %d before a token, %d beat it)"
          % (label, mid, early, finished), mid >= 1 and not other, other)
    ok, desc = wait_released(base)
    check("5c: %s: after 7 deadlines every pool is back to start, nothing running" % label, ok, desc)


def check_stop_string(label, client, base):
    """5d. A stop string ends the request early: exact result, blocks back."""
    prompt = "ROMEO:"
    full = generate_one(prompt, flags=["--temperature", "0", "--max-tokens", "48", "--ignore-eos"])
    text = full["text"]
    stop = text[len(text) // 3:len(text) // 3 + 4]
    want = generate_one(prompt, flags=["--temperature", "0", "--max-tokens", "48", "--ignore-eos", "--stop", stop])
    got = client.generate_text(prompt, temperature=0, max_tokens=48, ignore_eos=True, stop=stop, timeout=60)
    check("5d: %s: stop %r ends the text right before it, finish stop, equal to `generate --stop`" % (label, stop),
          (got.text, got.token_ids, got.finish_reason) == (want["text"], want["token_ids"], want["finish_reason"])
          and got.finish_reason == "stop" and got.text == text[:text.find(stop)],
          "%r vs %r" % ((got.text, got.token_ids, got.finish_reason),
                        (want["text"], want["token_ids"], want["finish_reason"])))
    check("5d: %s: usage.completion_tokens counts the streamed tokens" % label,
          got.usage is not None and got.usage.completion_tokens == len(got.token_ids), got.usage)
    # A stop token id, and a stop string within the first token.
    tok = full["token_ids"][6]
    k = full["token_ids"].index(tok)
    got = client.generate_text(prompt, temperature=0, max_tokens=48, ignore_eos=True, stop_token_ids=[tok],
                               timeout=60)
    check("5d: %s: stop_token_ids ends on the stop token (finish stop)" % label,
          got.token_ids == full["token_ids"][:k + 1] and got.finish_reason == "stop", got)
    got = client.generate_text(prompt, temperature=0, max_tokens=48, ignore_eos=True, stop=text[:1], timeout=60)
    check("5d: %s: a stop string in the first (prefill) token: empty text, one token, finish stop" % label,
          got.text == "" and got.finish_reason == "stop" and len(got.token_ids) == 1, got)
    got = client.generate_text(prompt, temperature=0, max_tokens=1, timeout=60)
    check("5d: %s: max_tokens 1 (the prefill's token alone) -> 1 token, finish length" % label,
          got.token_ids == full["token_ids"][:1] and got.finish_reason == "length", got)
    ok, desc = wait_released(base)
    check("5d: %s: after stop strings/ids ended requests early every pool is back to start" % label, ok, desc)


def check_malformed(label, client, addr):
    """8. Malformed requests through the router: exact code, field named."""
    import grpc
    INVALID = grpc.StatusCode.INVALID_ARGUMENT
    long_ids = [5 + i % 100 for i in range(250)]  # 250 tokens: 6 more fill the 256-token context
    table = malformed_requests(INVALID)
    for name, kw, code, needle in table:
        title = "8: %s: %s -> %s naming %r" % (label, name, code.name, needle)
        try:
            r = client.generate_text(timeout=30, **kw)
            check(title, False, "succeeded: %r" % (r,))
        except tc.TandemError as e:
            check(title, e.code == code and needle in e.details, "%s %r" % (e.code, e.details))
    ok_cases = [
        ("exactly the context (250 + 6 = 256: 16 blocks reserved)",
         dict(prompt_token_ids=long_ids, max_tokens=6, ignore_eos=True, temperature=0), 6),
        ("16 stop strings", dict(prompt="ROMEO:", stop=["#%d#" % i for i in range(16)], max_tokens=4), None),
        ("boundary values (top_p 1, top_k -1, min_p 1, penalties +-2, logprobs 20)",
         dict(prompt="ROMEO:", top_p=1, top_k=-1, min_p=1, frequency_penalty=2, presence_penalty=-2,
              logprobs=20, max_tokens=4), None),
        ("max_tokens 0 means 16", dict(prompt="ROMEO:", max_tokens=0, ignore_eos=True, temperature=0), 16),
    ]
    for name, kw, n in ok_cases:
        try:
            r = client.generate_text(timeout=60, **kw)
            check("8: %s: accepted: %s" % (label, name),
                  r.finish_reason is not None and (n is None or len(r.token_ids) == n), r)
        except tc.TandemError as e:
            check("8: %s: accepted: %s" % (label, name), False, e)
    want = generate_one(ids=long_ids, flags=["--temperature", "0", "--max-tokens", "6", "--ignore-eos"])
    r = client.generate_text(prompt_token_ids=long_ids, max_tokens=6, ignore_eos=True, temperature=0, timeout=60)
    check("8: %s: the full-context request (250 + 6) equals generate" % label, same_as(r, want) is None,
          same_as(r, want))
    # logprobs through the cluster: the first one comes from the prefill worker.
    lp = client.generate_text("ROMEO:", temperature=0, max_tokens=6, ignore_eos=True, logprobs=3, timeout=60)
    wl = generate_one("ROMEO:", flags=["--temperature", "0", "--max-tokens", "6", "--ignore-eos", "--logprobs", "3"])
    got = [(l.token_id, [t for t, _ in l.top_logprobs]) for l in lp.logprobs]
    want_lp = [(l["token_id"], [t["token_id"] for t in l["top_logprobs"]]) for l in wl["logprobs"]]
    close = len(lp.logprobs) == len(wl["logprobs"]) and all(
        abs(a.logprob - b["logprob"]) < 1e-4 for a, b in zip(lp.logprobs, wl["logprobs"]))
    check("8: %s: logprobs=3 through the cluster equal `generate --logprobs 3` (first from prefill; 1e-4)"
          % label, got == want_lp and close, "%s\nvs %s" % (lp.logprobs[:2], wl["logprobs"][:2]))
    # Unknown fields: raw bytes appended to a valid request.
    raw = channel(addr)
    call = raw.unary_stream("/tandem.v1.Generation/Generate", request_serializer=lambda b: b,
                            response_deserializer=tc.pb2.GenerateResponse.FromString)
    good = client.request("ROMEO:", max_tokens=4).SerializeToString()
    for name, payload, where in [("GenerateRequest", good + varint(99 << 3 | 0) + varint(1), "request"),
                                 ("SamplingParams", good + field_bytes(4, varint(77 << 3 | 0) + varint(5)),
                                  "sampling")]:
        title = "8: %s: unknown field in %s -> INVALID_ARGUMENT naming 'unknown field'" % (label, name)
        try:
            list(call(payload, timeout=30))
            check(title, False, "succeeded")
        except Exception as e:  # noqa: BLE001
            check(title, hasattr(e, "code") and e.code() == INVALID and "unknown field" in e.details()
                  and where in e.details(), e)


def check_example(label, addr):
    """9. clients/python/example.py streams a generation through the cluster."""
    want = generate_one("ROMEO:", flags=["--temperature", "0", "--max-tokens", "16"])
    example = os.path.join(ARGS.source, "clients", "python", "example.py")
    rc, out, err = run([sys.executable, example, "--addr", addr, "--prompt", "ROMEO:", "--max-tokens", "16",
                        "--temperature", "0"], timeout=120)
    check("9: %s: example.py exits 0" % label, rc == 0, err)
    check("9: %s: example.py prints the prompt and the streamed completion" % label,
          out == "ROMEO:" + want["text"] + "\n", "%r vs %r" % (out, "ROMEO:" + want["text"] + "\n"))
    check("9: %s: example.py reports finish and usage" % label,
          "[finish: %s, prompt tokens: %d, completion tokens: %d]" % (
              want["finish_reason"], len(want["prompt_token_ids"]), len(want["token_ids"])) in err, err)


def check_backpressure(label):
    """4. Invariant 2: a 20-block decode pool; 12 requests that need 15 blocks
    each wait at the router and all come out exact; with --max-queued 1 the
    overflow gets RESOURCE_EXHAUSTED."""
    import grpc
    n = 12
    prompts = [big_prompt(i) for i in range(n)]
    with ThreadPoolExecutor(2) as pool:
        wants = list(pool.map(lambda p: generate_one(ids=p, flags=["--temperature", "0", "--max-tokens", "40",
                                                                   "--ignore-eos"]), prompts))
    cl = ManualCluster("bp", "tcp,self")
    router2 = None
    try:
        if not check("4: %s: router starts" % label, cl.addr is not None, cl.router.log_tail()):
            return
        ok = cl.start_workers([("prefill", "bp-prefill", ["--num-kv-blocks", "64"]),
                               ("decode", "bp-decode", ["--num-kv-blocks", "20"])])
        if not check("4: %s: workers start (decode pool of 20 blocks)" % label, ok,
                     [p.log_tail() for p in cl.procs()]):
            return
        daddr, paddr = cl.addr_of("bp-decode"), cl.addr_of("bp-prefill")
        # Stats as soon as the worker listens (the router may route on it).
        s0 = _safe(lambda: stats(daddr, "decode"))
        check("4: %s: Stats right after the decode worker listens reports its pool (20 blocks total, 20 free)"
              % label, not isinstance(s0, Exception) and s0.kv_blocks_total == 20 and s0.kv_blocks_free == 20,
              s0 if isinstance(s0, Exception) else brief(s0))
        ok, st = cl.wait_registered(1, 1)
        if not check("4: %s: workers register with the router" % label, ok, st):
            return
        deadline = time.monotonic() + 5
        while stats(daddr, "decode").kv_blocks_total == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        base = snapshot([daddr], [paddr])
        check("4: %s: the decode pool has 20 blocks, none used" % label,
              base[0][daddr].kv_blocks_total == 20 and base[0][daddr].kv_blocks_used == 0, brief(base[0][daddr]))
        client = tc.TandemClient(cl.addr)
        t0 = time.monotonic()
        res = concurrent(lambda i: client.generate_text(prompt_token_ids=prompts[i], temperature=0, max_tokens=40,
                                                        ignore_eos=True, timeout=150), n, timeout=200)
        bad = ["#%d: %s" % (i, same_as(r, w)) for i, (r, w) in enumerate(zip(res, wants)) if same_as(r, w)]
        check("4: %s: 12 concurrent 200+40-token requests on a 20-block pool (one fits) all equal generate "
              "[%.1fs]" % (label, time.monotonic() - t0), not bad, "\n  ".join(bad[:3]) + " (%d bad)" % len(bad))
        ok, desc = wait_released(base)
        check("4: %s: afterwards the 20-block pool is all free" % label, ok, desc)

        # A queued request is admitted once the request holding the pool is
        # cancelled (the cancellation frees the blocks asynchronously).
        for attempt in range(3):
            holder = client.generate(prompt_token_ids=prompts[0], temperature=0, max_tokens=40, ignore_eos=True,
                                     timeout=60)
            next(holder)
            box = {}
            th = threading.Thread(target=lambda: box.update(r=_safe(lambda: client.generate_text(
                prompt_token_ids=prompts[1], temperature=0, max_tokens=40, ignore_eos=True, timeout=30))))
            th.start()
            time.sleep(0.3)  # its Admit was refused: it waits in the router's queue
            holder.close()
            th.join(timeout=40)
            r = box.get("r")
            if not check("4: %s: a queued request is admitted when the one holding the pool is cancelled (try %d)"
                         % (label, attempt + 1), same_as(r, wants[1]) is None, same_as(r, wants[1])):
                break
        ok, desc = wait_released(base)
        check("4: %s: after the cancel-while-queued runs the pool is all free" % label, ok, desc)

        # --max-queued 1: a second router in front of the same workers.
        router2 = Proc("bp-router2", [bin_path("tandem-router"), "--host", "127.0.0.1", "--port", "0",
                                      "--max-queued", "1", "--prefill-workers", paddr, "--decode-workers", daddr],
                       env=cl.env)
        m = router2.wait_line(r"tandem-router: listening on (127\.0\.0\.1:\d+)", 60)
        if not check("4: %s: router --max-queued 1 (static workers) starts" % label, m is not None,
                     router2.log_tail()):
            return
        client2 = tc.TandemClient(m.group(1))
        k = 8
        res = concurrent(lambda i: client2.generate_text(prompt_token_ids=prompts[i], temperature=0, max_tokens=40,
                                                         ignore_eos=True, timeout=120), k, timeout=150)
        exhausted = [i for i, r in enumerate(res) if isinstance(r, tc.TandemError)
                     and r.code == grpc.StatusCode.RESOURCE_EXHAUSTED]
        done = [i for i, r in enumerate(res) if same_as(r, wants[i]) is None]
        other = ["#%d: %s" % (i, same_as(r, wants[i])) for i, r in enumerate(res)
                 if i not in exhausted and i not in done]
        check("4: %s: --max-queued 1, %d at once: %d RESOURCE_EXHAUSTED, %d exact, none else"
              % (label, k, len(exhausted), len(done)),
              exhausted and done and len(exhausted) <= k - 2 and not other, other[:3])
        if exhausted:
            e = res[exhausted[0]]
            check("4: %s: the RESOURCE_EXHAUSTED message says the queue is full" % label, "queue" in e.details,
                  e.details)
        ok, desc = wait_released(base)
        check("4: %s: after the overflow the pool is all free" % label, ok, desc)
        client2.close()
        client.close()
    finally:
        if router2 is not None:
            check("4: %s: router --max-queued 1 exits 0 on SIGTERM" % label, router2.stop() == 0, router2.log_tail())
        cl.stop()


def _safe(fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        return e


def check_fault(label, expected_prompts):
    """7. SIGKILL one of two prefill workers while 16 requests flow. The
    prefill workers take 32 tokens a step, so the kill lands while the
    victim still holds prompts (it is killed once its Stats show >= 2)."""
    import grpc
    chunked = ["--max-num-batched-tokens", "32"]
    expected = mixed_expected(expected_prompts, chunked, "chunk32")
    cl = ManualCluster("fault", "tcp,self")
    try:
        if not check("7: %s: router starts" % label, cl.addr is not None, cl.router.log_tail()):
            return
        flags = ["--num-kv-blocks", "256"]
        ok = cl.start_workers([("prefill", "f-prefill-a", flags + chunked), ("prefill", "f-prefill-b", flags + chunked),
                               ("decode", "f-decode", flags), ("decode", "f-decode-b", flags)])
        if not check("7: %s: 2 prefill + 2 decode workers start" % label, ok, [p.log_tail() for p in cl.procs()]):
            return
        ok, st = cl.wait_registered(2, 2)
        if not check("7: %s: workers register" % label, ok, st):
            return
        daddr, daddr_b = cl.addr_of("f-decode"), cl.addr_of("f-decode-b")
        pa, pb = cl.addr_of("f-prefill-a"), cl.addr_of("f-prefill-b")
        base = snapshot([daddr, daddr_b], [pa, pb])
        client = tc.TandemClient(cl.addr)
        # Warm up both prefill workers (and see they both serve).
        warm = concurrent(lambda i: client.generate_text(expected_prompts[i], temperature=0,
                                                         max_tokens=GROUPS[i % 4][0], ignore_eos=GROUPS[i % 4][1],
                                                         stop_token_ids=GROUPS[i % 4][2], timeout=60), 4)
        check("7: %s: warm-up requests equal generate" % label,
              all(same_as(r, w) is None for r, w in zip(warm, expected[:4])), warm)
        n = 16

        def one(i):
            j = i % len(expected)
            mt, ie, stop_ids = GROUPS[j % 4]
            toks, text, finish, usage = [], "", None, None
            try:
                for c in client.generate(expected_prompts[j], temperature=0, max_tokens=mt, ignore_eos=ie,
                                         stop_token_ids=stop_ids, timeout=60):
                    toks += c.token_ids
                    text += c.text
                    finish, usage = c.finish_reason, c.usage or usage
            except tc.TandemError as e:
                return e
            r = tc.Completion(text, toks, finish, usage)
            return r

        victim = cl.workers["f-prefill-a"][0]
        killer_box = {}
        killed = threading.Event()

        def killer():
            # Polls the victim's engine; the load below keeps coming until the
            # kill lands, so a fast machine cannot slip every prompt past the
            # poll (one 16-request wave once did in CI).
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                s = _safe(lambda: stats(pa, "prefill"))
                if not isinstance(s, Exception) and s.num_running + s.num_waiting >= 2:
                    killer_box["held"] = s.num_running + s.num_waiting
                    break
                time.sleep(0.002)
            victim.proc.send_signal(signal.SIGKILL)
            killer_box["t"] = time.monotonic()
            killed.set()

        # 16 clients issue requests back to back until the kill, then one more
        # each (those land on the router while it learns of the death);
        # at most 20 each, so the loop is bounded.
        lock = threading.Lock()
        issued = [0]

        def client_loop(c):
            out, after_kill = [], 0
            while len(out) < 20 and after_kill < 1:
                if killed.is_set():
                    after_kill += 1
                with lock:
                    i = issued[0]
                    issued[0] += 1
                out.append((i, one(i)))
            return out

        kth = threading.Thread(target=killer)
        kth.start()
        t0 = time.monotonic()
        res = []
        for chunk in concurrent(client_loop, n, timeout=240):
            res += chunk if isinstance(chunk, list) else [(-1, chunk)]
        kth.join(timeout=70)
        elapsed = time.monotonic() - t0
        victim.proc.wait(timeout=30)
        check("7: %s: prefill worker A was SIGKILLed holding %s prompts (exit %s)"
              % (label, killer_box.get("held"), victim.proc.returncode),
              victim.proc.returncode == -signal.SIGKILL and killer_box.get("held", 0) >= 2, killer_box)
        clear = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.ABORTED,
                 grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED, grpc.StatusCode.DATA_LOSS)
        exact, errors, bad = 0, [], []
        for i, r in res:
            j = i % len(expected)
            if isinstance(r, tc.TandemError) and r.code in clear:
                errors.append("%s %s" % (r.code.name, r.details[:80]))
            elif same_as(r, expected[j]) is None:
                exact += 1
            else:
                bad.append("#%d: %s" % (i, same_as(r, expected[j])))
        log("fault run: %d exact, %d clear errors %s, %.1fs" % (exact, len(errors), errors[:3], elapsed))
        check("7: %s: each of %d requests is exact or ends with a clear status (none hangs, no wrong tokens): "
              "%d exact, %d errors [%.1fs]" % (label, len(res), exact, len(errors), elapsed), not bad,
              "\n  ".join(bad[:4]))
        # New requests go through the surviving prefill worker.
        after = []
        for i in range(4):
            after.append(_safe(lambda: client.generate_text(expected_prompts[i], temperature=0,
                                                            max_tokens=GROUPS[i % 4][0],
                                                            ignore_eos=GROUPS[i % 4][1],
                                                            stop_token_ids=GROUPS[i % 4][2], timeout=60)))
        bad = [same_as(r, w) for r, w in zip(after, expected[:4]) if same_as(r, w)]
        check("7: %s: after the kill, 4 new requests succeed exactly through the surviving worker" % label,
              not bad, bad[:2])
        check("7: %s: the router and the surviving workers are still up" % label,
              cl.router.alive() and cl.workers["f-prefill-b"][0].alive() and cl.workers["f-decode"][0].alive(),
              [p.log_tail(800) for p in cl.procs()])
        ok, desc = wait_released(({daddr: base[0][daddr], daddr_b: base[0][daddr_b]}, {pb: base[1][pb]}),
                                 timeout=20)
        check("7: %s: the decode workers' blocks and reservations (and the survivor's) are back to start" % label,
              ok, desc)

        # 7b. A decode worker dies: the one the router lists first (the one it
        # prefers on a tie). After three heartbeat intervals (the router asks
        # for one every 2 s) new requests must not be sent to it.
        listed = wpb2_grpc.WorkerRegistryStub(channel(cl.addr)).ListWorkers(wpb2.ListWorkersRequest(), timeout=5)
        first_decode = [w.worker_id for w in listed.workers if w.role == wpb2.WORKER_ROLE_DECODE][0]
        dvictim = cl.workers[first_decode][0]
        dvictim.proc.send_signal(signal.SIGKILL)
        dvictim.proc.wait(timeout=30)
        survivor = "f-decode-b" if first_decode == "f-decode" else "f-decode"
        time.sleep(6.5)
        after = []
        for i in range(6):
            after.append(_safe(lambda: client.generate_text(expected_prompts[i], temperature=0,
                                                            max_tokens=GROUPS[i % 4][0],
                                                            ignore_eos=GROUPS[i % 4][1],
                                                            stop_token_ids=GROUPS[i % 4][2], timeout=60)))
        bad = ["#%d: %s" % (i, same_as(r, w)) for i, (r, w) in enumerate(zip(after, expected[:6]))
               if same_as(r, w)]
        check("7b: %s: %s (listed first) SIGKILLed; 6.5 s later 6 sequential requests succeed exactly through "
              "%s" % (label, first_decode, survivor), not bad, "%d of 6 failed: %s" % (len(bad), bad[:3]))
        listed = wpb2_grpc.WorkerRegistryStub(channel(cl.addr)).ListWorkers(wpb2.ListWorkersRequest(), timeout=5)
        ids = sorted(w.worker_id for w in listed.workers)
        check("7b: %s: the router no longer lists the two killed workers (heartbeats stopped > 6 s ago)" % label,
              "f-prefill-a" not in ids and first_decode not in ids, ids)
        ok, desc = wait_released(({cl.addr_of(survivor): base[0][cl.addr_of(survivor)]}, {pb: base[1][pb]}),
                                 timeout=20)
        check("7b: %s: the surviving decode worker's pool is back to start" % label, ok, desc)
        client.close()
    finally:
        cl.stop()


def check_release_during_prefill(label):
    """5e / invariant 2: a request abandoned while its Prefill is still queued
    on a busy prefill worker. The router releases its decode reservation at
    once; the KV the prefill worker computes later must then not be shipped
    into those blocks, which the decode worker may already have handed to
    another request (Z here, admitted and prefilled through the worker API on
    a second, idle prefill worker)."""
    n_prompt, n_out = 200, 8
    x_ids, z_ids = big_prompt(20, n_prompt), big_prompt(21, n_prompt)
    want_z = generate_one(ids=z_ids, flags=["--temperature", "0", "--max-tokens", str(n_out), "--ignore-eos"])
    cl = ManualCluster("stale", "tcp,self")
    p2 = None
    d2 = None
    futures = []
    try:
        if not check("5e: %s: router starts" % label, cl.addr is not None, cl.router.log_tail()):
            return
        # One token a step keeps the busy worker busy for well over the decode
        # worker's 2 s release grace (n_busy x 200 steps; 24 prompts at 2
        # tokens a step once finished inside the grace on a fast run).
        n_busy = 96
        ok = cl.start_workers([("prefill", "s-prefill", ["--num-kv-blocks", "128", "--max-num-batched-tokens", "1"]),
                               # Z's reservation must outlive the busy worker's drain
                               # (33 s once in CI) before Z's Decode call.
                               ("decode", "s-decode", ["--num-kv-blocks", "16", "--reservation-timeout-ms", "150000"])])
        # The second prefill worker does not register: only this test uses it.
        p2 = Proc("stale-prefill2", [bin_path("tandem-prefill-worker"), "--host", "127.0.0.1", "--port", "0",
                                     "--num-kv-blocks", "64"], env=cl.env)
        m = p2.wait_line(r"listening on (127\.0\.0\.1:\d+)", 90)
        # A second decode worker, not registered either: the busy prompts' KV goes there.
        d2 = Proc("stale-decode2", [bin_path("tandem-decode-worker"), "--host", "127.0.0.1", "--port", "0",
                                    "--num-kv-blocks", "1400"], env=cl.env)
        m2 = d2.wait_line(r"listening on (127\.0\.0\.1:\d+)", 90)
        d2addr = m2.group(1) if m2 else None
        ok2, st = cl.wait_registered(1, 1)
        if not check("5e: %s: workers start and register" % label, ok and ok2 and m is not None and m2 is not None,
                     [p.log_tail() for p in cl.procs() + [p2, d2]]):
            return
        daddr, paddr, p2addr = cl.addr_of("s-decode"), cl.addr_of("s-prefill"), m.group(1)
        base = snapshot([daddr], [paddr, p2addr])
        samp = wpb2.ResolvedSampling(temperature=0, top_p=1, top_k=0, min_p=0, repetition_penalty=1,
                                     max_tokens=n_out, seed=1, ignore_eos=True)
        # Keep the prefill worker busy: prompts it computes and ships to a
        # second, unregistered decode worker (so nothing reaches s-decode).
        busy_dests = []
        for i in range(n_busy):
            busy_ids = big_prompt(30 + i, n_prompt)
            adm_busy = decode_stub(d2addr).Admit(wpb2.AdmitRequest(request_id="busy-%d" % i,
                                                                   prompt_token_ids=busy_ids, sampling=samp),
                                                 timeout=10)
            busy_dests.append("busy-%d" % i)
            futures.append(prefill_stub(paddr).Prefill.future(
                wpb2.PrefillRequest(request_id="busy-%d" % i, prompt_token_ids=busy_ids,
                                    sampling=samp, destination=adm_busy.destination), timeout=120))
        time.sleep(0.05)
        client = tc.TandemClient(cl.addr)
        r = _safe(lambda: client.generate_text(prompt_token_ids=x_ids, temperature=0, max_tokens=n_out,
                                               ignore_eos=True, timeout=0.15))
        client.close()
        check("5e: %s: request X (deadline 150 ms, prefill queued behind %d busy prompts) -> DEADLINE_EXCEEDED"
              % (label, n_busy), isinstance(r, tc.DeadlineExceededError), r)
        ok, desc = wait_released(({daddr: base[0][daddr]}, {}), timeout=10)
        t_released = time.monotonic()
        ps = stats(paddr, "prefill")
        check("5e: %s: the decode worker freed X's reservation while the prefill worker still holds prompts "
              "(running %d, waiting %d)" % (label, ps.num_running, ps.num_waiting),
              ok and ps.num_running + ps.num_waiting > 0, desc or brief(ps))
        # Z takes the freed blocks and gets its KV from the idle worker.
        adm = decode_stub(daddr).Admit(wpb2.AdmitRequest(request_id="z", prompt_token_ids=z_ids, sampling=samp),
                                       timeout=10)
        pre = prefill_stub(p2addr).Prefill(wpb2.PrefillRequest(request_id="z", prompt_token_ids=z_ids,
                                                               sampling=samp, destination=adm.destination),
                                           timeout=60)
        # Wait for the busy worker to finish everything (X included).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ps = stats(paddr, "prefill")
            if ps.num_running + ps.num_waiting == 0 and all(f.done() for f in futures):
                break
            time.sleep(0.05)
        log("busy prefill worker drained %.1f s after X's reservation was released" % (time.monotonic() - t_released))
        # Every prompt here has X's size: the busy worker must have shipped
        # exactly the busy prompts, and nothing for X.
        shipped = ps.kv_transfer_bytes_total - base[1][paddr].kv_transfer_bytes_total
        x_bytes = math.ceil(n_prompt / 16) * adm.destination.ranks[0].layout.num_layers * adm.destination.ranks[0].layout.block_span_bytes
        check("5e: %s: no KV is shipped for X after its reservation was released (shipped %d bytes = %d prompts "
              "of %d; %d busy ones expected; Z's blocks %s)" % (label, shipped, shipped // x_bytes, x_bytes,
                                                                n_busy, list(adm.destination.block_ids)),
              shipped == n_busy * x_bytes,
              "the prefill worker put X's KV into decode blocks freed %s" % (
                  "and now Z's" if shipped == (n_busy + 1) * x_bytes else "(?)"))
        toks = [pre.first_token_id]
        for msg in decode_stub(daddr).Decode(wpb2.DecodeRequest(request_id="z", first_token_id=pre.first_token_id),
                                             timeout=60):
            toks += list(msg.token_ids)
        check("5e: %s: Z, admitted into the blocks X had, decodes exactly `generate`'s tokens" % label,
              toks == want_z["token_ids"], "%s vs %s" % (toks, want_z["token_ids"]))
        ok, desc = wait_released(({daddr: base[0][daddr]}, {paddr: base[1][paddr], p2addr: base[1][p2addr]}))
        check("5e: %s: afterwards every pool is back to start" % label, ok, desc)
    finally:
        for f in futures:
            f.cancel()
        if p2 is not None:
            p2.stop()
        if d2 is not None:
            d2.stop()
        cl.stop()


# ------------------------------------------------------------ lifecycle: readiness, drain, IPv6

GEN_SERVICE, REG_SERVICE = "tandem.v1.Generation", "tandem.v1.WorkerRegistry"


def health_of(addr, service=""):
    """grpc.health.v1 status of `service` on `addr` ("SERVING", "NOT_SERVING", ...) or the error code's name."""
    c = tc.TandemClient(addr)
    try:
        return c.health(service, timeout=5)
    except tc.TandemError as e:
        return e.code.name
    finally:
        c.close()


def wait_health(addr, want, timeout, service=""):
    """Polls (bounded) until `service` reports `want`: (ok, seconds waited, last status)."""
    t0 = time.monotonic()
    while True:
        last = health_of(addr, service)
        waited = time.monotonic() - t0
        if last == want or waited > timeout:
            return last == want, waited, last
        time.sleep(0.05)


def run_health():
    """Readiness: the router's health ("" and tandem.v1.Generation) is NOT_SERVING
    until a prefill and a decode worker are registered, SERVING then,
    NOT_SERVING again within the router's expiry once the only decode worker
    dies, SERVING when one returns; the registry answers all along."""
    import grpc
    label = "router alone, then 1P+1D"
    cl = ManualCluster("health", "tcp,self")
    client = None
    try:
        if not check("health: %s: router starts" % label, cl.addr is not None, cl.router.log_tail()):
            return
        st = {s: health_of(cl.addr, s) for s in ("", GEN_SERVICE, REG_SERVICE)}
        check("health: %s: no worker yet: '' and Generation NOT_SERVING, WorkerRegistry SERVING" % label,
              st == {"": "NOT_SERVING", GEN_SERVICE: "NOT_SERVING", REG_SERVICE: "SERVING"}, st)
        listed = _safe(lambda: wpb2_grpc.WorkerRegistryStub(channel(cl.addr)).ListWorkers(
            wpb2.ListWorkersRequest(), timeout=5))
        check("health: %s: the registry answers while NOT_SERVING (ListWorkers: none)" % label,
              not isinstance(listed, Exception) and len(listed.workers) == 0, listed)
        client = tc.TandemClient(cl.addr)
        t0 = time.monotonic()
        r = _safe(lambda: client.generate_text("ROMEO:", max_tokens=4, timeout=20))
        check("health: %s: a request to a router without workers fails at once with UNAVAILABLE" % label,
              isinstance(r, tc.TandemError) and r.code == grpc.StatusCode.UNAVAILABLE
              and time.monotonic() - t0 < 5, r)
        ok = cl.start_workers([("prefill", "h-prefill", [])])
        ok2, last = cl.wait_registered(1, 0)
        time.sleep(0.6)  # several of the router's 200 ms readiness polls
        check("health: %s: a prefill worker alone: still NOT_SERVING" % label,
              ok and ok2 and health_of(cl.addr) == "NOT_SERVING", (ok, last, health_of(cl.addr)))
        ok = cl.start_workers([("decode", "h-decode", [])])
        ok2, waited, last = wait_health(cl.addr, "SERVING", 10)
        check("health: %s: a decode worker too: SERVING (%.2fs after it listened), Generation too" % (label, waited),
              ok and ok2 and health_of(cl.addr, GEN_SERVICE) == "SERVING", (ok, last))
        want = generate_one("ROMEO:", flags=["--temperature", "0", "--max-tokens", "16"])
        got = _safe(lambda: client.generate_text("ROMEO:", temperature=0, max_tokens=16, timeout=60))
        check("health: %s: once SERVING, a request equals generate" % label, same_as(got, want) is None,
              same_as(got, want))
        victim = cl.workers["h-decode"][0]
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=30)
        # The router forgets a worker 6 s after its last heartbeat (every 2 s).
        ok, waited, last = wait_health(cl.addr, "NOT_SERVING", 10)
        check("health: %s: the only decode worker SIGKILLed: NOT_SERVING after %.1fs (expiry 6 s), Generation too"
              % (label, waited), ok and health_of(cl.addr, GEN_SERVICE) == "NOT_SERVING", last)
        ok = cl.start_workers([("decode", "h-decode-2", [])])
        ok2, waited, last = wait_health(cl.addr, "SERVING", 10)
        check("health: %s: a new decode worker registers: SERVING again (%.2fs)" % (label, waited), ok and ok2,
              (ok, last, [p.log_tail(500) for p in cl.procs()]))
        got = _safe(lambda: client.generate_text("ROMEO:", temperature=0, max_tokens=16, timeout=60))
        check("health: %s: ... and answers exactly again" % label, same_as(got, want) is None, same_as(got, want))
        check("health: %s: WorkerRegistry SERVING throughout" % label, health_of(cl.addr, REG_SERVICE) == "SERVING")
    finally:
        if client is not None:
            client.close()
        cl.stop()


class Streams:
    """Streamed generations in threads; each records its tokens, finish,
    usage or error, and when its first and last chunks arrived."""

    def __init__(self, client, prompts, max_tokens):
        self.results = [None] * len(prompts)
        self.first = [threading.Event() for _ in prompts]
        self.threads = [threading.Thread(target=self._one, args=(client, i, p, max_tokens))
                        for i, p in enumerate(prompts)]
        for t in self.threads:
            t.start()

    def _one(self, client, i, prompt, max_tokens):
        r = {"tokens": [], "text": "", "finish": None, "usage": None, "error": None, "t_last": None}
        try:
            for c in client.generate(prompt, temperature=0, max_tokens=max_tokens, ignore_eos=True, timeout=120):
                r["tokens"] += c.token_ids
                r["text"] += c.text
                r["finish"], r["usage"] = c.finish_reason, c.usage or r["usage"]
                r["t_last"] = time.monotonic()
                self.first[i].set()
        except tc.TandemError as e:
            r["error"] = e
        self.first[i].set()
        self.results[i] = r

    def wait_started(self, timeout):
        deadline = time.monotonic() + timeout
        return all(e.wait(max(0.0, deadline - time.monotonic())) for e in self.first)

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return [r if r is not None else {"error": "still running after %ss" % timeout} for r in self.results]


def exact_streams(results, expected):
    """Why the streams differ from `tandem generate` (None when every one is exact)."""
    bad = []
    for i, (r, w) in enumerate(zip(results, expected)):
        got = (r.get("tokens"), r.get("finish"), r.get("usage"), r.get("error"))
        want = (w["token_ids"], w["finish_reason"], tc.Usage(len(w["prompt_token_ids"]), len(w["token_ids"])), None)
        if got != want:
            bad.append("#%d: got %d tokens %r %r error %r, want %d" % (i, len(got[0] or []), got[1], got[2], got[3],
                                                                   len(want[0])))
    return "; ".join(bad) or None


# Eight streams of 200 tokens on a decode worker that runs one at a time:
# the drain has work left for a while after the signal.
DRAIN_PROMPTS = ["ROMEO:", "JULIET:", "First Citizen:", "KING RICHARD:", "MENENIUS:", "HAMLET:", "GLOUCESTER:",
                 "Nurse:"]


def check_drain_router(expected):
    """SIGTERM to the router mid-stream: health NOT_SERVING at once, a new
    request UNAVAILABLE "router is shutting down", the streams in flight end
    exactly (200 tokens each), and the router exits 0 within its timeout.
    The decode worker runs one sequence at a time (--max-num-seqs 1), so the
    eight streams last a while after the signal."""
    import grpc
    label = "router SIGTERM mid-stream"
    cl = ManualCluster("drain-r", "tcp,self", router_extra=["--drain-timeout-s", "40"])
    try:
        if not check("drain: %s: router starts" % label, cl.addr is not None, cl.router.log_tail()):
            return
        ok = cl.start_workers([("prefill", "dr-prefill", []), ("decode", "dr-decode", ["--max-num-seqs", "1"])])
        ok2, waited, last = wait_health(cl.addr, "SERVING", 30)
        if not check("drain: %s: 1P+1D(--max-num-seqs 1) register, router SERVING" % label, ok and ok2,
                     [p.log_tail(500) for p in cl.procs()]):
            return
        client = tc.TandemClient(cl.addr)
        streams = Streams(client, DRAIN_PROMPTS, 200)
        started = streams.wait_started(60)
        cl.router.proc.send_signal(signal.SIGTERM)
        t_term = time.monotonic()
        ok, waited, last = wait_health(cl.addr, "NOT_SERVING", 2)
        probe = _safe(lambda: client.generate_text("ROMEO:", max_tokens=4, timeout=10))
        t_probe = time.monotonic()
        check("drain: %s: every stream had its first chunk before the signal" % label, started)
        check("drain: %s: health NOT_SERVING %.2fs after SIGTERM" % (label, waited), ok, last)
        check("drain: %s: a new request during the drain: UNAVAILABLE 'router is shutting down'" % label,
              isinstance(probe, tc.TandemError) and probe.code == grpc.StatusCode.UNAVAILABLE
              and "shutting down" in probe.details, probe)
        results = streams.join(120)
        late = sum(1 for r in results if r.get("t_last") and r["t_last"] > t_probe)
        check("drain: %s: the drain was mid-stream (%d of %d streams still sent chunks after the refused request)"
              % (label, late, len(results)), late > 0, [r.get("t_last") for r in results])
        bad = exact_streams(results, expected)
        check("drain: %s: all %d streams in flight complete exactly (200 tokens, finish length)"
              % (label, len(results)), bad is None, bad)
        try:
            rc = cl.router.proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            rc = None
        t_done = max([r["t_last"] for r in results if r.get("t_last")] or [t_term])
        check("drain: %s: the router exits 0 (%.1fs after SIGTERM, %.1fs after the last stream ended; drain "
              "timeout 40 s)" % (label, time.monotonic() - t_term, time.monotonic() - t_done), rc == 0,
              "rc %s\n%s%s" % (rc, "".join(cl.router.stdout), cl.router.log_tail()))
        client.close()
    finally:
        cl.stop()


def check_drain_decode(expected):
    """SIGTERM to the only decode worker mid-stream: it tells the router
    (ListWorkers shows it draining; the router goes NOT_SERVING), a new
    request gets UNAVAILABLE at once, its streams finish exactly, it exits 0."""
    import grpc
    label = "decode worker SIGTERM mid-stream"
    cl = ManualCluster("drain-d", "tcp,self")
    try:
        if not check("drain: %s: router starts" % label, cl.addr is not None, cl.router.log_tail()):
            return
        ok = cl.start_workers([("prefill", "dd-prefill", []),
                               ("decode", "dd-decode", ["--max-num-seqs", "1", "--drain-timeout-s", "40"])])
        ok2, waited, last = wait_health(cl.addr, "SERVING", 30)
        if not check("drain: %s: 1P+1D(--max-num-seqs 1) register, router SERVING" % label, ok and ok2,
                     [p.log_tail(500) for p in cl.procs()]):
            return
        client = tc.TandemClient(cl.addr)
        streams = Streams(client, DRAIN_PROMPTS, 200)
        started = streams.wait_started(60)
        victim = cl.workers["dd-decode"][0]
        victim.proc.send_signal(signal.SIGTERM)
        t_term = time.monotonic()
        registry = wpb2_grpc.WorkerRegistryStub(channel(cl.addr))
        draining = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not draining:
            listed = _safe(lambda: registry.ListWorkers(wpb2.ListWorkersRequest(), timeout=2))
            draining = not isinstance(listed, Exception) and any(
                w.worker_id == "dd-decode" and w.draining for w in listed.workers)
            time.sleep(0.02)
        t0 = time.monotonic()
        probe = _safe(lambda: client.generate_text("ROMEO:", max_tokens=4, timeout=20))
        t_probe = time.monotonic()
        check("drain: %s: every stream had its first chunk before the signal" % label, started)
        check("drain: %s: the router lists the worker as draining %.2fs after SIGTERM"
              % (label, t0 - t_term), draining)
        ok, waited, last = wait_health(cl.addr, "NOT_SERVING", 2)  # the router polls readiness every 200 ms
        check("drain: %s: the router, left without a decode worker, is NOT_SERVING (%.2fs later)" % (label, waited),
              ok, last)
        check("drain: %s: a new request gets UNAVAILABLE in %.2fs (no hang)" % (label, t_probe - t0),
              isinstance(probe, tc.TandemError) and probe.code == grpc.StatusCode.UNAVAILABLE
              and t_probe - t0 < 5, probe)
        results = streams.join(120)
        late = sum(1 for r in results if r.get("t_last") and r["t_last"] > t_probe)
        check("drain: %s: the drain was mid-stream (%d of %d streams still sent chunks after the refused request)"
              % (label, late, len(results)), late > 0, [r.get("t_last") for r in results])
        bad = exact_streams(results, expected)
        check("drain: %s: all %d streams on the worker complete exactly (200 tokens, finish length)"
              % (label, len(results)), bad is None, bad)
        try:
            rc = victim.proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            rc = None
        check("drain: %s: the decode worker exits 0 (%.1fs after SIGTERM)" % (label, time.monotonic() - t_term),
              rc == 0, "rc %s\n%s" % (rc, victim.log_tail()))
        check("drain: %s: the router and the prefill worker are still up" % label,
              cl.router.alive() and cl.workers["dd-prefill"][0].alive())
        client.close()
    finally:
        cl.stop()


def run_drain():
    expected = generate_many(DRAIN_PROMPTS, 200, True, [], "drain")
    check_drain_router(expected)
    check_drain_decode(expected)


def ipv6_loopback():
    """Why IPv6 loopback cannot be used here, or None when it can."""
    import socket
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError as e:
        return "cannot bind [::1]: %s" % e
    return None


def run_ipv6():
    """--host ::1 for the router and both workers: they listen and advertise
    [::1]:PORT, the router reaches them, a request gives `generate`'s tokens
    (as every 127.0.0.1 stage does); an unbracketed IPv6 address is refused."""
    import grpc
    why = ipv6_loopback()
    if why is not None:
        log("SKIP ipv6 stage: no IPv6 loopback on this machine (%s)" % why)
        return
    label = "--host ::1"
    cl = ManualCluster("ipv6", "tcp,self", host="::1")
    try:
        if not check("ipv6: %s: router listens on [::1]:PORT" % label, cl.addr is not None, cl.router.log_tail()):
            return
        ok = cl.start_workers([("prefill", "v6-prefill", []), ("decode", "v6-decode", [])])
        ok2, last = cl.wait_registered(1, 1)
        if not check("ipv6: %s: workers listen on [::1]:PORT and register" % label, ok and ok2,
                     [p.log_tail(500) for p in cl.procs()]):
            return
        listed = wpb2_grpc.WorkerRegistryStub(channel(cl.addr)).ListWorkers(wpb2.ListWorkersRequest(), timeout=5)
        addrs = sorted(w.address for w in listed.workers)
        check("ipv6: %s: the workers advertise bracketed addresses" % label,
              addrs == sorted(cl.addr_of(w) for w in ("v6-prefill", "v6-decode"))
              and all(re.fullmatch(r"\[::1\]:\d+", a) for a in addrs), addrs)
        ok, waited, last = wait_health(cl.addr, "SERVING", 10)
        check("ipv6: %s: the router is SERVING" % label, ok, last)
        want = generate_one("ROMEO:", flags=["--temperature", "0", "--max-tokens", "24", "--ignore-eos"])
        client = tc.TandemClient(cl.addr)
        got = _safe(lambda: client.generate_text("ROMEO:", temperature=0, max_tokens=24, ignore_eos=True,
                                                 timeout=60))
        client.close()
        check("ipv6: %s: a request through [::1] equals generate (as over 127.0.0.1)" % label,
              same_as(got, want) is None, same_as(got, want))
        bad = _safe(lambda: wpb2_grpc.WorkerRegistryStub(channel(cl.addr)).Register(
            wpb2.RegisterRequest(worker_id="v6-bad", role=wpb2.WORKER_ROLE_DECODE, address="::1:5000"), timeout=5))
        check("ipv6: %s: Register with an unbracketed IPv6 address -> INVALID_ARGUMENT naming it" % label,
              isinstance(bad, grpc.RpcError) and bad.code() == grpc.StatusCode.INVALID_ARGUMENT
              and "bracketed" in bad.details(), bad)
    finally:
        cl.stop()


# ------------------------------------------------------------ the clusters

def run_cluster_a(prompts, expected, model_cfg):
    """`tandem up` 1 prefill + 1 decode over UCX tcp: checks 1-3, 5, 6, 8-10."""
    label = "up 1P/1D tcp"
    up = UpCluster("up-a", ["--num-kv-blocks", "512"], "tcp,self")
    try:
        ready = up.wait_ready()
        if not check("%s: `tandem up` prints its members and ready (router, prefill-0, decode-0)" % label,
                     ready and set(up.members) == {"router", "prefill-0", "decode-0"}
                     and up.addr == up.members["router"][1], "".join(up.proc.stdout) + up.proc.log_tail()):
            return
        dec, pre = up.addrs("decode"), up.addrs("prefill")
        check_health(label, [("router", up.addr)] + [("decode worker", a) for a in dec]
                     + [("prefill worker", a) for a in pre])
        client = tc.TandemClient(up.addr)
        base = snapshot(dec, pre)
        layout = check_layout(label, dec[0], model_cfg, 4, "F32")
        ok, desc = wait_released(base)
        check("3: %s: the probe reservation's block is free again" % label, ok, desc)
        before = {a: s.kv_transfer_bytes_total for a, s in base[1].items()}
        steps = [
            ("1", lambda: check_mixed32(label, client, prompts, expected)),
            ("3", lambda: check_kv_bytes(label, pre, before, expected, layout)),
            ("5a", lambda: check("5a: %s: after 32 completed requests every pool is back to start, nothing running"
                                 % label, *wait_released(base))),
            ("6", lambda: check_first_chunk(label, client)),
            ("2", lambda: check_seeded(label, client)),
            ("5b", lambda: check_cancel(label, client, base)),
            ("5c", lambda: check_deadline(label, client, base)),
            ("5d", lambda: check_stop_string(label, client, base)),
            ("8", lambda: check_malformed(label, client, up.addr)),
            ("9", lambda: check_example(label, up.addr)),
        ]
        for name, step in steps:
            try:
                step()
            except Exception:  # noqa: BLE001
                check("%s: %s ran without an exception" % (name, label), False, traceback.format_exc())
            if up.proc.proc.poll() is not None:
                check("%s: `tandem up` still running after %s" % (label, name), False,
                      "exit %s\n%s" % (up.proc.proc.returncode, up.proc.log_tail()))
                break
        ok, desc = wait_released(base)
        check("5: %s: after all checks every pool is back to start" % label, ok, desc)
        client.close()
        # A dead child stops the whole cluster, exit 1.
        if up.proc.alive():
            os.kill(up.members["decode-0"][0], signal.SIGKILL)
            try:
                rc = up.proc.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                rc = None
            check("%s: SIGKILL of decode-0 makes `tandem up` stop the cluster and exit 1" % label, rc == 1,
                  "rc %s\n%s" % (rc, up.proc.log_tail()))
            left = wait_pids_gone(up.pids())
            check("%s: ... and the router and prefill-0 are gone" % label, not left, left)
    finally:
        up.proc.stop(wait=30)


def kv_head_shard(kv_heads, rank, size):
    """engine/model/tp_shard.h KvHeadShard: (first head, heads) of a rank."""
    if kv_heads >= size:
        per = kv_heads // size
        return per * rank, per
    return rank // (size // kv_heads), 1


def run_cluster_tp(prompts, expected, model_cfg):
    """Tensor-parallel workers: prefill TP=a -> decode TP=b (fan-out, fan-in,
    fan-out onto replicated KV heads) give the single-process tokens, every
    decode rank gets exactly its heads' bytes, and the pool (one block table
    for all ranks) is back to start."""
    n = 12
    kv_heads, layers = model_cfg["num_key_value_heads"], model_cfg["num_hidden_layers"]
    head_dim = model_cfg.get("head_dim") or model_cfg["hidden_size"] // model_cfg["num_attention_heads"]
    for a, b, tls in [(1, 2, "tcp,self"), (2, 1, "sm,self,cma"), (2, 4, "tcp,self")]:
        label = "router+1P(tp%d)+1D(tp%d) %s" % (a, b, tls.split(",")[0])
        cl = ManualCluster("tp%d%d" % (a, b), tls)
        try:
            if not check("tp: %s: router listening" % label, cl.addr is not None, cl.router.log_tail()):
                continue
            started = cl.start_workers([("prefill", "p0", ["--tp", str(a), "--num-kv-blocks", "256"]),
                                        ("decode", "d0", ["--tp", str(b), "--num-kv-blocks", "256"])])
            ok, last = cl.wait_registered(1, 1)
            if not check("tp: %s: workers start and register" % label, started and ok,
                         "%s\n%s" % (last, "\n".join(p.log_tail() for p in cl.procs()))):
                continue
            dec, pre = cl.addr_of("d0"), cl.addr_of("p0")
            base = snapshot([dec], [pre])
            resp, size, _ = probe_admit(dec, "probe-tp")
            ranks = resp.destination.ranks
            want = [(r, b, *kv_head_shard(kv_heads, r, b)) for r in range(b)]
            got = [(x.layout.tp_rank, x.layout.tp_size, x.layout.kv_head_begin, x.layout.num_kv_heads) for x in ranks]
            spans = [x.layout.block_span_bytes for x in ranks]
            check("tp: %s: Admit gives one region per decode rank with its KV heads %s, span 2*heads*16*%d*4, "
                  "%d KV heads in all, distinct descriptors" % (label, [w[2:] for w in want], head_dim, kv_heads),
                  got == want and spans == [2 * w[3] * 16 * head_dim * 4 for w in want]
                  and all(x.layout.total_kv_heads == kv_heads and x.layout.num_layers == layers for x in ranks)
                  and len({x.memory_descriptor for x in ranks}) == b, resp.destination)
            s = stats(dec, "decode")
            check("tp: %s: decode Stats reports tp_size %d" % (label, b), s.tp_size == b, s)
            ok, desc = wait_released(base)
            check("tp: %s: the probe reservation's block is free again" % label, ok, desc)
            before = stats(pre, "prefill").kv_transfer_bytes_total
            client = tc.TandemClient(cl.addr)
            check_mixed32(label, client, prompts[:n], expected[:n])
            client.close()
            # Every decode rank received its heads of every prompt block, each
            # replica its own copy: sum over ranks of their span per block and layer.
            want_bytes = sum(math.ceil(len(r["prompt_token_ids"]) / 16) for r in expected[:n]) * layers * sum(spans)
            grew = stats(pre, "prefill").kv_transfer_bytes_total - before
            check("tp: %s: prefill shipped exactly sum(ceil(prompt/16)) * %d layers * %d bytes (all decode ranks' "
                  "spans) = %d" % (label, layers, sum(spans), want_bytes), grew == want_bytes,
                  "grew by %d" % grew)
            ok, desc = wait_released(base)
            check("tp: %s: after the requests the pool is back to start on both workers" % label, ok, desc)
        finally:
            cl.stop()


def run_serve(prompts, expected):
    label = "serve"
    srv = Proc("serve", [bin_path("tandem"), "serve", "--host", "127.0.0.1", "--port", "0", "--num-kv-blocks", "512"])
    try:
        m = srv.wait_line(r"tandem serve: listening on (127\.0\.0\.1:\d+)", 60)
        if not check("%s: `tandem serve` starts" % label, m is not None, srv.log_tail()):
            return
        check_health(label, [("server", m.group(1))])
        client = tc.TandemClient(m.group(1))
        check_mixed32(label, client, prompts, expected)
        client.close()
    finally:
        rc = srv.stop()
        check("%s: `tandem serve` exits 0 on SIGTERM" % label, rc == 0, "rc %s %s" % (rc, srv.log_tail()))


def run_cluster_c(prompts, model_cfg):
    """`tandem up` 2 prefill + 2 decode over UCX shared memory/CMA, bf16 KV and
    BF16 matmuls (--dtype bfloat16), each role pinned to its own CPU where the
    machine has two."""
    label = "up 2P/2D sm,cma bf16"
    ref = ["--kv-cache-dtype", "bf16", "--max-num-batched-tokens", "512", "--dtype", "bfloat16"]
    engine = ["--num-kv-blocks", "512"] + ref
    cpus = sorted(os.sched_getaffinity(0))
    pin = {"prefill": str(cpus[0]), "decode": str(cpus[1])} if len(cpus) >= 2 else {}
    pin_args = ["--prefill-cores", pin["prefill"], "--decode-cores", pin["decode"]] if pin else []
    expected = mixed_expected(prompts, ref, "bf16")
    up = UpCluster("up-c", ["--prefill-workers", "2", "--decode-workers", "2"] + engine + pin_args, "sm,self,cma")
    try:
        ready = up.wait_ready()
        if not check("%s: `tandem up` prints its 5 members and ready" % label,
                     ready and set(up.members) == {"router", "prefill-0", "prefill-1", "decode-0", "decode-1"},
                     "".join(up.proc.stdout) + up.proc.log_tail()):
            return
        if pin:
            allowed = {}
            for name, (pid, _) in up.members.items():
                with open("/proc/%d/status" % pid) as f:
                    allowed[name] = [l.split()[1] for l in f if l.startswith("Cpus_allowed_list:")][0]
            want = {n: pin[n.split("-")[0]] for n in up.members if n != "router"}
            check("%s: --prefill-cores %s --decode-cores %s pinned each worker (Cpus_allowed_list)"
                  % (label, pin["prefill"], pin["decode"]),
                  all(allowed[n] == c for n, c in want.items()) and allowed["router"] != want["decode-0"],
                  allowed)
        if "OMP_WAIT_POLICY" not in os.environ:
            # Two workers per role share their role's CPUs: the launcher makes
            # their OpenMP threads wait passively (and leaves the router alone).
            policy = {}
            for name, (pid, _) in up.members.items():
                with open("/proc/%d/environ" % pid, "rb") as f:
                    env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
                policy[name] = env.get(b"OMP_WAIT_POLICY")
            check("%s: workers sharing CPUs get OMP_WAIT_POLICY=passive, the router none" % label,
                  all(v == (None if n == "router" else b"passive") for n, v in policy.items())
                  and any("OMP_WAIT_POLICY=passive" in l for l in up.proc.stdout), policy)
        dec, pre = up.addrs("decode"), up.addrs("prefill")
        check_health(label, [("router", up.addr)] + [("decode worker", a) for a in dec]
                     + [("prefill worker", a) for a in pre])
        client = tc.TandemClient(up.addr)
        base = snapshot(dec, pre)
        layout = check_layout(label, dec[1], model_cfg, 2, "BF16")
        before = {a: s.kv_transfer_bytes_total for a, s in base[1].items()}
        try:
            peak = {a: 0 for a in dec}
            sampling = threading.Event()

            def sampler():  # the most blocks each decode worker held during the run
                while not sampling.is_set():
                    for a in dec:
                        peak[a] = max(peak[a], _safe(lambda: stats(a, "decode").kv_blocks_used) or 0)
                    time.sleep(0.005)

            sth = threading.Thread(target=sampler)
            sth.start()
            try:
                check_mixed32(label, client, prompts, expected)
            finally:
                sampling.set()
                sth.join(timeout=10)
            check_kv_bytes(label, pre, before, expected, layout, want_all_used=True)
            check("1: %s: both decode workers held blocks during the run (peak used %s)" % (
                label, sorted(peak.values())), all(v > 0 for v in peak.values()), peak)
            ok, desc = wait_released(base)
            check("5a: %s: after 32 requests every pool of the 4 workers is back to start" % label, ok, desc)
            check_seeded(label, client, ref)
            check_cancel(label, client, base, ref)
        except Exception:  # noqa: BLE001
            check("%s: checks ran without an exception" % label, False, traceback.format_exc())
        client.close()
    finally:
        alive = up.proc.alive()
        rc = up.proc.stop(wait=40)
        check("%s: `tandem up` exits 0 on SIGTERM" % label, alive and rc == 0, "rc %s\n%s" % (rc, up.proc.log_tail()))
        left = wait_pids_gone(up.pids())
        check("%s: ... and stops its 5 processes" % label, not left, left)


# ------------------------------------------------------------ main

def main():
    global ARGS, tc, wpb2, wpb2_grpc
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--only", default="",
                    help="comma list of a,serve,c,tp,bp,stale,fault,health,drain,ipv6 (default all)")
    ARGS = ap.parse_args()
    ARGS.bin_dir = os.path.abspath(ARGS.bin_dir)
    ARGS.source = os.path.abspath(ARGS.source)
    ARGS.work = os.path.abspath(ARGS.work)
    shutil.rmtree(ARGS.work, ignore_errors=True)
    os.makedirs(ARGS.work)
    # SIGTERM (CTest timeout) unwinds through the finally blocks below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.monotonic()

    # The client generates its stubs into the work dir; the worker API's
    # stubs go next to them (same tandem.v1 package).
    stubs = os.path.join(ARGS.work, "stubs")
    os.environ["TANDEM_CLIENT_STUBS"] = stubs
    sys.path.insert(0, os.path.join(ARGS.source, "clients", "python"))
    try:
        import tandem_client
        tc = tandem_client
        proto = os.path.join(ARGS.source, "proto")
        rc, out, err = run(["protoc", "-I", proto, "--python_out=" + stubs, "--grpc_out=" + stubs,
                            "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin",
                            os.path.join(proto, "tandem", "v1", "worker.proto")])
        if rc != 0:
            raise RuntimeError("protoc worker.proto: " + err)
        from tandem.v1 import worker_pb2, worker_pb2_grpc
        wpb2, wpb2_grpc = worker_pb2, worker_pb2_grpc
    except Exception:  # noqa: BLE001
        check("client package and worker stubs import", False, traceback.format_exc())
        print("%d passed, %d failed" % (len(PASSED), len(FAILED)))
        return 1
    check("client package imports; generation and worker stubs generated into the work dir",
          os.path.isfile(os.path.join(stubs, "tandem", "v1", "worker_pb2_grpc.py")))
    for b in ("tandem", "tandem-router", "tandem-prefill-worker", "tandem-decode-worker"):
        if not check("binary %s exists" % b, os.access(bin_path(b), os.X_OK), bin_path(b)):
            print("%d passed, %d failed" % (len(PASSED), len(FAILED)))
            return 1
    with open(os.path.join(ARGS.source, "models", "tandem-shakespeare", "config.json")) as f:
        model_cfg = json.load(f)

    only = set(filter(None, ARGS.only.split(",")))
    prompts = make_prompts(32)
    try:
        expected = mixed_expected(prompts)
        longest = max(len(r["prompt_token_ids"]) for r in expected)
        stops = sum(1 for r in expected if r["finish_reason"] == "stop")
        check("1: the 32 prompts are of mixed lengths (1..%d tokens) and outputs (%d stop early)"
              % (longest, stops), longest >= 40 and 4 <= stops <= 28,
              [len(r["prompt_token_ids"]) for r in expected])
        stages = [("a", lambda: run_cluster_a(prompts, expected, model_cfg)),
                  ("serve", lambda: run_serve(prompts, expected)),
                  ("c", lambda: run_cluster_c(prompts, model_cfg)),
                  ("tp", lambda: run_cluster_tp(prompts, expected, model_cfg)),
                  ("bp", lambda: check_backpressure("router+1P+1D(20 blocks)")),
                  ("stale", lambda: check_release_during_prefill("router+1P(busy)+1D(16 blocks)")),
                  ("fault", lambda: check_fault("router+2P+2D", prompts)),
                  ("health", run_health),
                  ("drain", run_drain),
                  ("ipv6", run_ipv6)]
        for name, stage in stages:
            if only and name not in only:
                continue
            ts = time.monotonic()
            try:
                stage()
            except Exception:  # noqa: BLE001
                check("stage %s ran without an exception" % name, False, traceback.format_exc())
            log("stage %s took %.1fs" % (name, time.monotonic() - ts))
    finally:
        close_channels()
        alive_before = [p.name for p in STARTED if p.alive()]
        for p in STARTED:
            p.stop(wait=10)
        check("every process this test started had been stopped by its stage", not alive_before, alive_before)
        left = [p.name for p in STARTED if p.alive()]
        gone = wait_pids_gone([pid for pid, _ in FOREIGN_PIDS])
        check("no process this test started is left (%d started directly, %d by `tandem up`)"
              % (len(STARTED), len(FOREIGN_PIDS)), not left and not gone,
              "%s %s" % (left, [n for p, n in FOREIGN_PIDS if p in gone]))

    print("(%.1fs)" % (time.monotonic() - t0))
    print("%d passed, %d failed" % (len(PASSED), len(FAILED)))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
