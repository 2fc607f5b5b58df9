#!/usr/bin/python3
"""End-to-end checks of Tandem's Prometheus metrics with a real Prometheus.

Starts `tandem up --port 0 --metrics-base-port B` (router, one prefill and
one decode worker on 127.0.0.1, KV over UCX tcp) and a Prometheus server
scraping the three metrics ports every second, runs a short bounded load
through the Python client, waits (bounded) until every target was scraped
after the load ended, then asks Prometheus's HTTP API:
  - token and request counts equal exactly what the client saw (generated
    tokens, prompt tokens, requests by status, TTFT/ITL/e2e counts);
  - TTFT p99 (histogram_quantile over the buckets), the generated-token
    rate and KV usage come back non-empty and consistent;
  - worker metrics agree with each other (steps, KV blocks, transfers).
Also: `promtool check metrics` on every live /metrics, bad --metrics-port /
--metrics-base-port values exit 2 with a clear message, `promtool check
config` on deploy/prometheus/prometheus.yml, and every PromQL expression of
deploy/grafana/*.json names only metrics a live scrape exposes and evaluates
without error.

Every process listens on 127.0.0.1 only and is stopped by its PID in a
finally block; every wait is bounded. Prints PASS/FAIL per check, then
"N passed, M failed"; exits non-zero on any failure.

  metrics_test.py --bin-dir build/bin --source . --work DIR
"""

import argparse
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_util  # noqa: E402
from e2e_util import free_port, make_prompts  # noqa: E402

PASSED, FAILED = [], []
ARGS = None
tc = None  # tandem_client, imported in main()
STARTED = []  # every Proc this test started
FOREIGN_PIDS = []  # pids `tandem up` started for us


def check(name, cond, detail=""):
    (PASSED if cond else FAILED).append(name)
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else ": " + str(detail)[:2500]), flush=True)
    return cond


def log(msg):
    print("  .. " + msg, flush=True)


def run(cmd, timeout=60, stdin=None):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=stdin)
    return p.returncode, p.stdout, p.stderr


class Proc(e2e_util.Proc):
    """One process we started: stdout lines queued, stderr to <work>/<name>.log."""

    def __init__(self, name, cmd, env=None):
        super().__init__(name, cmd, os.path.join(ARGS.work, name + ".log"), env=env)
        STARTED.append(self)


def pid_alive(pid):
    """True when `pid` is a live (not zombie) tandem process: a pid reused by
    an unrelated process after ours exited is not ours to kill."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            letter = f.read().rsplit(")", 1)[1].split()[0]
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read()
    except OSError:
        return False
    return letter != "Z" and b"tandem" in cmd


def bin_path(name):
    return os.path.join(ARGS.bin_dir, name)


# ------------------------------------------------------------ ports


def free_port_range(n, tries=50):
    """A base port B with B..B+n-1 all bindable on 127.0.0.1 now (bounded tries)."""
    rng = random.Random(os.getpid())
    for _ in range(tries):
        base = rng.randrange(20000, 60000 - n)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no %d consecutive free ports found" % n)


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


# ------------------------------------------------------------ Prometheus


class Prometheus:
    def __init__(self, targets):
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        cfg = os.path.join(ARGS.work, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: tandem\n    static_configs:\n      - targets: [%s]\n"
                    % ", ".join("'%s'" % t for t in targets))
        self.proc = Proc("prometheus", ["prometheus", "--config.file=" + cfg,
                                        "--storage.tsdb.path=" + os.path.join(ARGS.work, "tsdb"),
                                        "--web.listen-address=127.0.0.1:%d" % self.port,
                                        "--log.level=warn"])

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.proc.poll() is not None:
                return False
            try:
                if http_get(self.url + "/-/ready", timeout=2)[0] == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    def query(self, expr):
        """(status, result list or error text) of an instant query now."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            _, body = http_get(url, timeout=10)
        except urllib.error.HTTPError as e:
            body = e.read().decode()
        except OSError as e:
            return "error", str(e)
        d = json.loads(body)
        if d.get("status") != "success":
            return "error", d.get("error", body)
        return "success", d["data"]["result"]

    def scalar(self, expr):
        """The value of a one-series query, or None when empty / several / an error."""
        st, res = self.query(expr)
        if st != "success" or len(res) != 1:
            return None
        return float(res[0]["value"][1])

    def by_label(self, expr, label):
        st, res = self.query(expr)
        if st != "success":
            return None
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in res}


# ------------------------------------------------------------ the load


def run_load(addr):
    """16 requests (4 at a time) plus one invalid: what the client saw."""
    prompts = make_prompts(16)
    seen = {"tokens": 0, "prompt_tokens": 0, "status": {}, "ok": 0, "max_ttft": 0.0, "errors": []}
    lock = threading.Lock()

    def one(i):
        client = tc.TandemClient(addr, timeout=120)
        try:
            t0 = time.monotonic()
            first = None
            n, finish, usage = 0, None, None
            kwargs = dict(max_tokens=3 + (i * 5) % 14, temperature=0, seed=i)
            if i % 4 == 3:
                kwargs["stop"] = ["e"]  # most of these end on the stop string
            with client.generate(prompts[i], **kwargs) as stream:
                for c in stream:
                    if c.token_ids and first is None:
                        first = time.monotonic() - t0
                    n += len(c.token_ids)
                    if c.finish_reason is not None:
                        finish, usage = c.finish_reason, c.usage
            with lock:
                seen["tokens"] += n
                seen["prompt_tokens"] += usage.prompt_tokens
                seen["status"][finish] = seen["status"].get(finish, 0) + 1
                seen["ok"] += 1
                seen["max_ttft"] = max(seen["max_ttft"], first or 0.0)
                if usage.completion_tokens != n:
                    seen["errors"].append("request %d: usage %d != %d tokens received" % (i, usage.completion_tokens, n))
        except Exception as e:  # noqa: BLE001
            with lock:
                seen["errors"].append("request %d: %r" % (i, e))
        finally:
            client.close()

    with ThreadPoolExecutor(4) as ex:
        list(ex.map(one, range(len(prompts))))
    # One refused request: counted under its gRPC code, nothing else.
    client = tc.TandemClient(addr, timeout=30)
    try:
        client.generate_text("ROMEO:", temperature=-1)
        seen["errors"].append("temperature -1 was accepted")
    except tc.TandemError as e:
        seen["status"]["invalid_argument"] = 1
        log("refused as expected: %s" % e)
    finally:
        client.close()
    return seen


# ------------------------------------------------------------ PromQL names

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless",
    "inf", "nan", "le",
}


def promql_metric_names(expr):
    """Metric names an expression selects: identifiers that are not functions,
    aggregations, keywords, label names or durations."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)           # string literals
    e = re.sub(r"\{[^}]*\}", "", e)                          # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                         # range / subquery durations
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)  # label lists
    e = e.replace("$__rate_interval", "").replace("$__interval", "")
    names = set()
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def dashboard_exprs(dashboard):
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))

    walk(dashboard.get("panels", []))
    return out


def exposed_names(texts):
    """Every sample name (x, x_bucket, x_sum, x_count) in the /metrics texts."""
    names = set()
    for text in texts:
        for line in text.splitlines():
            if line and not line.startswith("#"):
                names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    return names


# ------------------------------------------------------------ checks


def check_bad_flags():
    for binary, args in [("tandem-router", ["--metrics-port", "abc"]),
                         ("tandem-router", ["--metrics-port", "70000"]),
                         ("tandem-prefill-worker", ["--metrics-port", "-3"]),
                         ("tandem-decode-worker", ["--metrics-port", "x1"])]:
        rc, out, err = run([bin_path(binary)] + args, timeout=60)
        check("%s %s exits 2 naming --metrics-port" % (binary, " ".join(args)),
              rc == 2 and "--metrics-port" in err and "[0, 65535]" in err, (rc, err[-500:]))
    rc, out, err = run([bin_path("tandem"), "serve", "--metrics-port", "99999"], timeout=60)
    check("tandem serve --metrics-port 99999 exits 2 naming the flag",
          rc == 2 and "--metrics-port" in err, (rc, err[-500:]))
    rc, out, err = run([bin_path("tandem"), "up", "--metrics-base-port", "65534"], timeout=60)
    check("tandem up --metrics-base-port 65534 (3 processes do not fit) exits 2",
          rc == 2 and "--metrics-base-port must be in [1, 65533]" in err, (rc, err[-500:]))
    rc, out, err = run([bin_path("tandem"), "up", "--metrics-base-port", "0"], timeout=60)
    check("tandem up --metrics-base-port 0 exits 2", rc == 2 and "--metrics-base-port" in err, (rc, err[-500:]))


def check_promtool(urls):
    texts = []
    for name, url in urls:
        status, text = http_get(url)
        texts.append(text)
        rc, out, err = run(["promtool", "check", "metrics"], stdin=text)
        check("promtool check metrics: %s's live /metrics is clean" % name,
              status == 200 and rc == 0 and not out.strip() and not err.strip(), (status, rc, out, err))
    return texts


def wait_scraped_after(prom, t_end, n_targets, timeout=30):
    """Bounded wait until every target's latest successful scrape is newer than t_end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # timestamp() of a plain selector is the sample's own time (of an
        # expression it would be the evaluation time); up must be 1 as well.
        st, ts = prom.query('timestamp(up{job="tandem"})')
        st2, up = prom.query('up{job="tandem"}')
        if (st == st2 == "success" and len(ts) == len(up) == n_targets
                and all(float(r["value"][1]) > t_end for r in ts) and all(r["value"][1] == "1" for r in up)):
            return True
        time.sleep(0.5)
    return False


def check_counts(prom, seen):
    n_ok = seen["ok"]
    gen = prom.scalar('sum(tandem_generation_tokens_total{role="router"})')
    check("tandem_generation_tokens_total == tokens the client received (%d)" % seen["tokens"],
          gen == seen["tokens"], gen)
    prompt = prom.scalar('sum(tandem_prompt_tokens_total{role="router"})')
    check("tandem_prompt_tokens_total == the client's usage.prompt_tokens sum (%d)" % seen["prompt_tokens"],
          prompt == seen["prompt_tokens"], prompt)
    by_status = prom.by_label('sum by (status) (tandem_requests_total{role="router"})', "status")
    nonzero = {k: int(v) for k, v in (by_status or {}).items() if v != 0}
    check("tandem_requests_total by status == the client's finishes and errors %s" % seen["status"],
          nonzero == seen["status"], by_status)
    check("every requests_total status series exists from the start (stop, length, 16 gRPC codes)",
          by_status is not None and len(by_status) == 18, sorted((by_status or {}).keys()))
    for metric, want in [("tandem_time_to_first_token_seconds", n_ok),
                         ("tandem_e2e_request_latency_seconds", n_ok),
                         ("tandem_inter_token_latency_seconds", seen["tokens"] - n_ok),
                         ("tandem_request_queue_time_seconds", n_ok)]:
        got = prom.scalar('sum(%s_count{role="router"})' % metric)
        check("%s_count == %d" % (metric, want), got == want, got)
    for g in ("tandem_requests_inflight", "tandem_requests_queued"):
        got = prom.scalar('sum(%s{role="router"})' % g)
        check("%s is 0 after the load" % g, got == 0, got)


def check_quantiles(prom, seen):
    p99 = prom.scalar('histogram_quantile(0.99, sum by (le) (tandem_time_to_first_token_seconds_bucket{role="router"}))')
    # The server's TTFT of each request is at most the client's, so p99 is at
    # most the upper bound of the bucket holding the client's largest TTFT.
    bounds = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
              30.0, 60.0]
    cap = next((b for b in bounds if b >= seen["max_ttft"]), math.inf)
    check("TTFT p99 from the buckets is a number in (0, %g] (client's max TTFT %.4f s)" % (cap, seen["max_ttft"]),
          p99 is not None and 0 < p99 <= cap, p99)
    rate_p99 = prom.scalar('histogram_quantile(0.99, sum by (le) (rate(tandem_time_to_first_token_seconds_bucket[1m])))')
    check("TTFT p99 over rate(...[1m]) is non-empty and finite",
          rate_p99 is not None and math.isfinite(rate_p99) and rate_p99 > 0, rate_p99)
    tok_rate = prom.scalar('sum(rate(tandem_generation_tokens_total[1m]))')
    check("generated-token rate over the last minute is non-empty and > 0", tok_rate is not None and tok_rate > 0,
          tok_rate)


def check_workers(prom, seen):
    up = prom.by_label("tandem_worker_up", "worker")
    check("tandem_worker_up: the router sees prefill-0 and decode-0 up", up == {"prefill-0": 1, "decode-0": 1}, up)
    usage = prom.by_label("tandem_kv_cache_usage_ratio", "worker")
    used = prom.by_label("tandem_kv_blocks_used", "worker")
    free = prom.by_label("tandem_kv_blocks_free", "worker")
    ok = usage is not None and set(usage) == {"prefill-0", "decode-0"} and all(
        usage[w] == used[w] / (used[w] + free[w]) and 0 <= usage[w] <= 1 for w in usage)
    check("KV usage per worker is non-empty and == used / (used + free)", ok, (usage, used, free))
    # A reservation released before activation (a stop string in the first
    # token) keeps its blocks for the decode worker's --release-grace-ms, so
    # wait (bounded) for a scrape that shows every block free again.
    deadline = time.monotonic() + 30
    blocks = used
    while time.monotonic() < deadline and not (blocks and all(v == 0 for v in blocks.values())):
        time.sleep(0.5)
        blocks = prom.by_label("tandem_kv_blocks_used", "worker")
    check("every KV block is free again after the load (invariant 3, seen through Prometheus)",
          blocks is not None and len(blocks) == 2 and all(v == 0 for v in blocks.values()), blocks)
    steps = prom.by_label("tandem_engine_steps_total", "worker")
    step_count = prom.by_label("tandem_step_duration_seconds_count", "worker")
    batch_count = prom.by_label("tandem_batch_size_count", "worker")
    check("step-duration and batch-size observations == engine steps, per worker, and > 0",
          steps and steps == step_count == batch_count and all(v > 0 for v in steps.values()),
          (steps, step_count, batch_count))
    queued = prom.by_label("tandem_request_queue_time_seconds_count", "role")
    # Every request is prefilled; a request the first token already ends
    # (a stop string, eos) is never scheduled on the decode worker.
    check("engine queue time: one observation per request on the prefill worker, at most one on the decode worker",
          queued is not None and queued.get("prefill") == seen["ok"] and 0 < queued.get("decode", 0) <= seen["ok"],
          queued)
    transfers = prom.scalar('tandem_kv_transfer_seconds_count{role="prefill"}')
    check("tandem_kv_transfer_seconds: one transfer per request on the prefill worker", transfers == seen["ok"],
          transfers)
    sent = prom.scalar('tandem_kv_transfer_bytes_total{role="prefill"}')
    fails = prom.by_label("tandem_kv_transfer_failures_total", "worker")
    check("KV bytes were put by the prefill worker, no transfer failed",
          sent is not None and sent > 0 and fails == {"prefill-0": 0, "decode-0": 0}, (sent, fails))
    refused = prom.by_label("tandem_kv_puts_refused_total", "worker")
    check("no KV put was refused (every put landed in its reservation's blocks)",
          refused == {"prefill-0": 0, "decode-0": 0}, refused)
    queries = prom.scalar('tandem_prefix_cache_queries_total{role="prefill"}')
    hits = prom.scalar('tandem_prefix_cache_hits_total{role="prefill"}')
    check("prefix cache: queries > 0 and hits <= queries on the prefill worker",
          queries is not None and hits is not None and queries > 0 and 0 <= hits <= queries, (queries, hits))
    running = prom.by_label("tandem_num_requests_running", "worker")
    waiting = prom.by_label("tandem_num_requests_waiting", "worker")
    check("running and waiting are 0 on every worker after the load",
          running == {"prefill-0": 0, "decode-0": 0} and waiting == {"prefill-0": 0, "decode-0": 0},
          (running, waiting))
    pre = prom.by_label("tandem_num_preemptions_total", "worker")
    check("tandem_num_preemptions_total is exported per worker", pre is not None and len(pre) == 2, pre)


def check_dashboards(prom, texts):
    live = exposed_names(texts)
    files = sorted(f for f in os.listdir(os.path.join(ARGS.source, "deploy", "grafana")) if f.endswith(".json"))
    check("three dashboards in deploy/grafana", files == ["tandem-overview.json", "tandem-transfer.json",
                                                          "tandem-workers.json"], files)
    covered = set()
    for fname in files:
        with open(os.path.join(ARGS.source, "deploy", "grafana", fname)) as f:
            d = json.load(f)
        exprs = dashboard_exprs(d)
        bad_names, bad_eval = [], []
        for title, expr in exprs:
            names = promql_metric_names(expr)
            covered |= names
            missing = sorted(n for n in names if n not in live)
            if not names or missing:
                bad_names.append((title, expr, missing))
            st, res = prom.query(expr.replace("$__rate_interval", "1m").replace("$__interval", "1m"))
            if st != "success":
                bad_eval.append((title, expr, res))
        check("%s: %d expressions, each names only metrics the live cluster exposes" % (fname, len(exprs)),
              exprs and not bad_names, bad_names)
        check("%s: every expression evaluates without error in Prometheus" % fname, not bad_eval, bad_eval)
    want = {"tandem_requests_total", "tandem_time_to_first_token_seconds_bucket",
            "tandem_inter_token_latency_seconds_bucket", "tandem_e2e_request_latency_seconds_bucket",
            "tandem_generation_tokens_total", "tandem_requests_queued", "tandem_kv_cache_usage_ratio",
            "tandem_batch_size_sum", "tandem_step_duration_seconds_bucket", "tandem_num_preemptions_total",
            "tandem_prefix_cache_hits_total", "tandem_kv_transfer_bytes_total", "tandem_kv_transfer_seconds_bucket",
            "tandem_kv_transfer_failures_total"}
    check("the dashboards cover requests, latencies, tokens, queue, KV, batch, steps, preemptions, prefix cache, "
          "transfer", want <= covered, sorted(want - covered))
    # The name parser itself, on the awkward cases.
    got = promql_metric_names('sum by (le, worker) (rate(a_bucket{x="y(z)"}[5m])) / on (w) group_left (v) b '
                              '+ histogram_quantile(0.9, c:d) offset 1m and bool e')
    check("the PromQL name parser finds exactly the selected metrics", got == {"a_bucket", "b", "c:d", "e"}, got)


def main():
    global ARGS, tc
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--work", required=True)
    ARGS = ap.parse_args()
    ARGS.bin_dir, ARGS.source, ARGS.work = map(os.path.abspath, (ARGS.bin_dir, ARGS.source, ARGS.work))
    shutil.rmtree(ARGS.work, ignore_errors=True)
    os.makedirs(ARGS.work)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # CTest timeout unwinds the finally blocks
    os.environ["TANDEM_CLIENT_STUBS"] = os.path.join(ARGS.work, "stubs")
    sys.path.insert(0, os.path.join(ARGS.source, "clients", "python"))
    import tandem_client
    tc = tandem_client
    for tool in ("prometheus", "promtool"):
        if shutil.which(tool) is None:
            check("%s is installed (Debian package prometheus; scripts/install_deps.sh --test)" % tool, False)
            print("%d passed, %d failed" % (len(PASSED), len(FAILED)))
            return 1

    rc, out, err = run(["promtool", "check", "config", os.path.join(ARGS.source, "deploy", "prometheus",
                                                                    "prometheus.yml")])
    check("promtool check config deploy/prometheus/prometheus.yml", rc == 0, out + err)
    check_bad_flags()

    up = prom = None
    try:
        base = free_port_range(3)
        env = dict(os.environ, UCX_TLS="tcp")
        up = Proc("up", [bin_path("tandem"), "up", "--port", "0", "--metrics-base-port", str(base)], env=env)
        members, addr = [], None
        member_rx = re.compile(r"^tandem up: (\S+) pid (\d+) on 127\.0\.0\.1:\d+, metrics on (http://127\.0\.0\.1:(\d+)/metrics)")
        deadline = time.monotonic() + 180
        while addr is None and time.monotonic() < deadline:
            line = up.next_line(deadline)
            if line is None:
                break
            m = member_rx.search(line)
            if m:
                members.append((m.group(1), m.group(3), int(m.group(4))))
                FOREIGN_PIDS.append(int(m.group(2)))
            m = re.search(r"^tandem up: ready on (127\.0\.0\.1:\d+)", line)
            if m:
                addr = m.group(1)
        if not check("tandem up prints each process's metrics URL: router, prefill-0, decode-0 on base, +1, +2",
                     addr is not None and members == [("router", "http://127.0.0.1:%d/metrics" % base, base),
                                                      ("prefill-0", "http://127.0.0.1:%d/metrics" % (base + 1), base + 1),
                                                      ("decode-0", "http://127.0.0.1:%d/metrics" % (base + 2), base + 2)],
                     (members, up.log_tail())):
            return 1
        urls = [(n, u) for n, u, _ in members]
        targets = ["127.0.0.1:%d" % p for _, _, p in members]
        prom = Prometheus(targets)
        if not check("Prometheus server ready on 127.0.0.1", prom.wait_ready(), prom.proc.log_tail()):
            return 1

        # A scrape before the load and one after it: every counter then has
        # two samples an increase apart, so rate() over them is defined and > 0.
        if not check("Prometheus scraped every target before the load (bounded wait)",
                     wait_scraped_after(prom, time.time(), len(targets)), prom.query("up")):
            return 1
        seen = run_load(addr)
        t_end = time.time()
        check("the load ran without client errors (%d requests ok)" % seen["ok"],
              not seen["errors"] and seen["ok"] == 16, seen["errors"])
        log("client saw %d tokens, %d prompt tokens, statuses %s" % (seen["tokens"], seen["prompt_tokens"],
                                                                       seen["status"]))
        if not check("Prometheus scraped every target after the load ended (bounded wait)",
                     wait_scraped_after(prom, t_end, len(targets)), prom.query("up")):
            return 1
        texts = check_promtool(urls)
        check_counts(prom, seen)
        check_quantiles(prom, seen)
        check_workers(prom, seen)
        check_dashboards(prom, texts)
    except Exception:  # noqa: BLE001
        check("no exception", False, traceback.format_exc())
    finally:
        for p in reversed(STARTED):
            rc = p.stop()
            if p is up:
                check("tandem up exits 0 on SIGTERM", rc == 0, (rc, p.log_tail()))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(pid_alive(p) for p in FOREIGN_PIDS):
            time.sleep(0.1)
        left = [p for p in FOREIGN_PIDS if pid_alive(p)]
        for p in left:
            os.kill(p, signal.SIGKILL)
        check("no process left behind", not left, left)
    print("%d passed, %d failed" % (len(PASSED), len(FAILED)))
    return 0 if not FAILED else 1


if __name__ == "__main__":
    sys.exit(main())
