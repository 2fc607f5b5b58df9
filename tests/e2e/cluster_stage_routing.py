"""The cluster test's cache-aware routing stage (kvroute): tandem-router
(kv-aware, the default) in front of two prefill workers with small KV pools
and one decode worker, started by hand over UCX tcp. Prompts sharing
prefixes are served token-exact against `tandem generate`; the prefill pool
evicts, and the workers' KV events (sent with their heartbeats) bring the
router's prefix index to exactly what each worker's cache holds (the
router's tandem_router_indexed_blocks equals each worker's
tandem_kv_blocks_cached; without the eviction events it would keep every
block it routed). Then a prefill worker is killed and started again under
its id: the router drops what the old process held (index 0 for it), and
requests go on exact."""

import re
import time

from cluster_procs import ManualCluster
from cluster_refs import big_prompt, generate_one
from cluster_state import check
import cluster_state as state
from e2e_util import metric

PREFILL_BLOCKS = 12  # two 80-token prompts (5 blocks each) fit; a third evicts


def metrics_port(proc, timeout=30):
    deadline = time.monotonic() + timeout
    rx = re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")
    while time.monotonic() < deadline:
        for line in list(proc.stdout):
            m = rx.search(line)
            if m:
                return int(m.group(1))
        time.sleep(0.1)
    return None


def index_matches(router_port, ports, timeout=20):
    """Waits (events ride the 2 s heartbeat) until the router's index holds
    exactly each worker's cached block count; returns (ok, {wid: (router, worker)})."""
    deadline = time.monotonic() + timeout
    while True:
        got = {}
        for wid, (role, port) in ports.items():
            got[wid] = (metric(router_port, "tandem_router_indexed_blocks", worker=wid, role=role),
                        metric(port, "tandem_kv_blocks_cached"))
        if all(r == w for r, w in got.values()) or time.monotonic() > deadline:
            return all(r == w for r, w in got.values()), got
        time.sleep(0.25)


def run_kv_routing():
    label = "router(kv-aware) + 2P(%d blocks) + 1D" % PREFILL_BLOCKS
    c = ManualCluster("kvroute", "tcp,self", router_extra=["--metrics-port", "0"])
    try:
        specs = [("prefill", "p0", ["--num-kv-blocks", str(PREFILL_BLOCKS), "--metrics-port", "0"]),
                 ("prefill", "p1", ["--num-kv-blocks", str(PREFILL_BLOCKS), "--metrics-port", "0"]),
                 ("decode", "d0", ["--num-kv-blocks", "256", "--metrics-port", "0"])]
        started = c.start_workers(specs)
        ok, last = c.wait_registered(2, 1)
        if not check("%s: workers start and register" % label, started and ok, last):
            return
        router_port = metrics_port(c.router)
        ports = {wid: (kind, metrics_port(c.workers[wid][0])) for kind, wid, _ in specs}
        if not check("%s: every process serves metrics" % label,
                     router_port and all(p for _, p in ports.values()), (router_port, ports)):
            return
        client = state.tc.TandemClient(c.addr)
        prefixes = [big_prompt(i, 64) for i in range(3)]
        prompts = [prefixes[k % 3] + big_prompt(100 + k, 16) for k in range(6)]
        flags = ["--temperature", "0", "--max-tokens", "4"]
        want = [generate_one(ids=p, flags=flags)["token_ids"] for p in prompts]

        def serve(ps, ws, what):
            got = [client.generate_text(prompt_token_ids=p, temperature=0, max_tokens=4, timeout=60).token_ids
                   for p in ps]
            bad = [i for i, (g, w) in enumerate(zip(got, ws)) if g != w]
            check("%s: %s: %d requests (prompts sharing 3 prefixes) equal `tandem generate`"
                  % (label, what, len(ps)), not bad, [(got[i], ws[i]) for i in bad])

        serve(prompts, want, "in turn")
        routed = metric(router_port, "tandem_router_prompt_blocks_total", role="prefill")
        check("%s: the router counted the prompt blocks it routed (6 x 5)" % label, routed == 30, routed)
        ok, got = index_matches(router_port, {w: (r, p) for w, (r, p) in ports.items()})
        # Served in turn, every prompt found both prefill workers idle: the
        # one that registered first took them all (ties go to the first).
        busy = max(("p0", "p1"), key=lambda w: got[w][1])
        held = got[busy][1] + got["p0" if busy == "p1" else "p1"][1]
        check("%s: KV events bring the router's index to exactly what each worker caches "
              "(the prefill pool evicted: %d of 30 routed blocks held)" % (label, held),
              ok and 0 < held <= PREFILL_BLOCKS, got)
        hits = metric(ports["p0"][1], "tandem_prefix_cache_hits_total") + \
            metric(ports["p1"][1], "tandem_prefix_cache_hits_total")
        check("%s: the prefill workers' own prefix caches hit (%d tokens)" % (label, hits), hits > 0, hits)

        # The busy one dies and comes back under its id: what the old process
        # held is forgotten.
        c.workers[busy][0].stop(sig=9)
        del c.workers[busy]
        restarted = c.start_workers([spec for spec in specs if spec[1] == busy])
        ports[busy] = ("prefill", metrics_port(c.workers[busy][0]) if restarted else None)
        deadline = time.monotonic() + 20
        indexed = None
        while time.monotonic() < deadline:
            indexed = metric(router_port, "tandem_router_indexed_blocks", worker=busy, role="prefill")
            if indexed == 0:
                break
            time.sleep(0.25)
        check("%s: a restarted prefill worker's %d old blocks leave the router's index" % (label, got[busy][0]),
              restarted and indexed == 0 and got[busy][0] > 0, indexed)
        serve(prompts[:3], want[:3], "after %s's restart" % busy)
        ok, got = index_matches(router_port, {w: (r, p) for w, (r, p) in ports.items()})
        check("%s: after the restart the index again equals every cache" % label, ok, got)
        client.close()
    finally:
        c.stop()
