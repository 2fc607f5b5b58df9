"""Cluster test stages on a small decode pool: back-pressure (bp, check 4:
requests queue at the router until blocks free up; --max-queued overflow
gets RESOURCE_EXHAUSTED) and a reservation released while its prefill is
still queued (stale, check 5e: no KV shipped into blocks handed on)."""

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cluster_state as state
from cluster_checks import brief, concurrent, decode_stub, prefill_stub, safe, snapshot, stats, wait_released
from cluster_procs import ManualCluster, Proc, bin_path
from cluster_refs import big_prompt, generate_one, same_as
from cluster_state import check, log


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
        s0 = safe(lambda: stats(daddr, "decode"))
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
        client = state.tc.TandemClient(cl.addr)
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
            th = threading.Thread(target=lambda: box.update(r=safe(lambda: client.generate_text(
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
                                      "--cluster-port", "0", "--max-queued", "1", "--prefill-workers", paddr,
                                      "--decode-workers", daddr] + cl.tls_flags("router"),
                       env=cl.env)
        m = router2.wait_line(r"tandem-router: listening on (127\.0\.0\.1:\d+)", 60)
        if not check("4: %s: router --max-queued 1 (static workers) starts" % label, m is not None,
                     router2.log_tail()):
            return
        client2 = state.tc.TandemClient(m.group(1))
        k = 8
        res = concurrent(lambda i: client2.generate_text(prompt_token_ids=prompts[i], temperature=0, max_tokens=40,
                                                         ignore_eos=True, timeout=120), k, timeout=150)
        exhausted = [i for i, r in enumerate(res) if isinstance(r, state.tc.TandemError)
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
                                     "--num-kv-blocks", "64"] + cl.tls_flags("prefill-worker"), env=cl.env)
        m = p2.wait_line(r"listening on (127\.0\.0\.1:\d+)", 90)
        # A second decode worker, not registered either: the busy prompts' KV
        # goes there. Nobody renews these reservations (no router), and the
        # decode worker refuses puts into an expired one, so they must outlive
        # the busy worker's drain (37 s once here) or its last prompts ship
        # nothing and the byte count below falls short.
        d2 = Proc("stale-decode2", [bin_path("tandem-decode-worker"), "--host", "127.0.0.1", "--port", "0",
                                    "--num-kv-blocks", "1400", "--reservation-timeout-ms", "150000"]
                    + cl.tls_flags("decode-worker"), env=cl.env)
        m2 = d2.wait_line(r"listening on (127\.0\.0\.1:\d+)", 90)
        d2addr = m2.group(1) if m2 else None
        ok2, st = cl.wait_registered(1, 1)
        if not check("5e: %s: workers start and register" % label, ok and ok2 and m is not None and m2 is not None,
                     [p.log_tail() for p in cl.procs() + [p2, d2]]):
            return
        daddr, paddr, p2addr = cl.addr_of("s-decode"), cl.addr_of("s-prefill"), m.group(1)
        base = snapshot([daddr], [paddr, p2addr])
        samp = state.wpb2.ResolvedSampling(temperature=0, top_p=1, top_k=0, min_p=0, repetition_penalty=1,
                                           max_tokens=n_out, seed=1, ignore_eos=True)
        # Keep the prefill worker busy: prompts it computes and ships to a
        # second, unregistered decode worker (so nothing reaches s-decode).
        busy_dests = []
        for i in range(n_busy):
            busy_ids = big_prompt(30 + i, n_prompt)
            adm_busy = decode_stub(d2addr).Admit(state.wpb2.AdmitRequest(request_id="busy-%d" % i,
                                                                         prompt_token_ids=busy_ids, sampling=samp),
                                                 timeout=10)
            busy_dests.append("busy-%d" % i)
            futures.append(prefill_stub(paddr).Prefill.future(
                state.wpb2.PrefillRequest(request_id="busy-%d" % i, prompt_token_ids=busy_ids,
                                          sampling=samp, destination=adm_busy.destination), timeout=120))
        time.sleep(0.05)
        client = state.tc.TandemClient(cl.addr)
        r = safe(lambda: client.generate_text(prompt_token_ids=x_ids, temperature=0, max_tokens=n_out,
                                              ignore_eos=True, timeout=0.15))
        client.close()
        check("5e: %s: request X (deadline 150 ms, prefill queued behind %d busy prompts) -> DEADLINE_EXCEEDED"
              % (label, n_busy), isinstance(r, state.tc.DeadlineExceededError), r)
        ok, desc = wait_released(({daddr: base[0][daddr]}, {}), timeout=10)
        t_released = time.monotonic()
        ps = stats(paddr, "prefill")
        check("5e: %s: the decode worker freed X's reservation while the prefill worker still holds prompts "
              "(running %d, waiting %d)" % (label, ps.num_running, ps.num_waiting),
              ok and ps.num_running + ps.num_waiting > 0, desc or brief(ps))
        # Z takes the freed blocks and gets its KV from the idle worker.
        adm = decode_stub(daddr).Admit(state.wpb2.AdmitRequest(request_id="z", prompt_token_ids=z_ids, sampling=samp),
                                       timeout=10)
        pre = prefill_stub(p2addr).Prefill(state.wpb2.PrefillRequest(request_id="z", prompt_token_ids=z_ids,
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
              "the prefill worker put X's KV into decode blocks freed and now Z's"
              if shipped > n_busy * x_bytes else
              "the busy prompts did not all ship (their reservations on stale-decode2 expired or puts were refused)")
        toks = [pre.first_token_id]
        for msg in decode_stub(daddr).Decode(state.wpb2.DecodeRequest(request_id="z",
                                                                      first_token_id=pre.first_token_id),
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
