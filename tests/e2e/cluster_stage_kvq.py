"""The cluster test's quantized-KV stage (kvq): `tandem up` 1P/1D over UCX
tcp with `--quantization int8 --kv-cache-dtype int8`, then both fp8: 16 concurrent mixed greedy
requests equal `tandem generate` with the same flag exactly (the blocks,
int8 scales included, travel prefill -> decode unchanged), the Admit layout
names the dtype and the quantized span size, the prefill worker shipped
exactly the prompts' spans, and every pool is back to start; with int8,
also a prefill worker of TP 1 into a decode worker of TP 2 (head-slice puts:
each head's codes and scales are one piece) gives the same tokens. Then a prefill
worker with int8 beside a decode worker with fp32 (tandem-router and the
workers started by hand): requests fail, none hangs, and the prefill worker
says why (the KV dtypes differ; start both with the same --kv-cache-dtype)."""

import traceback

import cluster_state as state
from cluster_checks import check_kv_bytes, check_mixed32, probe_admit, snapshot, wait_released
from cluster_procs import ManualCluster, UpCluster
from cluster_refs import mixed_expected
from cluster_state import check

# dtype flag -> (KvLayout.dtype, bytes of one (K or V, head) piece of a
# 16-token block: codes, int8's 16 fp32 scales, padded to 64; kv_cache.h)
KV_DTYPES = {"int8": ("I8", lambda hd: -(-(16 * hd + 16 * 4) // 64) * 64),
             "fp8": ("F8_E4M3", lambda hd: -(-(16 * hd) // 64) * 64)}


def run_kv_quant(prompts, model_cfg):
    prompts = prompts[:16]
    for flag, (name, piece) in KV_DTYPES.items():
        # The weights quantized the same way (issue 15's serving target is
        # --quantization int8 --kv-cache-dtype int8): both workers load them
        # so, and tandem generate with the same flags is the reference.
        label = "up 1P/1D tcp --quantization %s --kv-cache-dtype %s" % (flag, flag)
        ref = ["--kv-cache-dtype", flag, "--quantization", flag]
        expected = mixed_expected(prompts, ref, "kv" + flag)
        up = UpCluster("up-kv" + flag, ["--num-kv-blocks", "512"] + ref, "tcp,self")
        try:
            ready = up.wait_ready()
            if not check("%s: `tandem up` ready" % label, ready, "".join(up.proc.stdout) + up.proc.log_tail()):
                continue
            dec, pre = up.addrs("decode"), up.addrs("prefill")
            client = state.tc.TandemClient(up.addr)
            base = snapshot(dec, pre)
            resp, _, rel = probe_admit(dec[0], "probe-kv-%s" % flag)
            lay = resp.destination.ranks[0].layout
            want_span = 2 * model_cfg["num_key_value_heads"] * piece(model_cfg["head_dim"])
            check("%s: Admit layout says %s, span %d bytes (codes%s, 64-byte pieces)"
                  % (label, name, want_span, " + per-token scales" if flag == "int8" else ""),
                  lay.dtype == name and lay.block_span_bytes == want_span and rel.released, lay)
            ok, desc = wait_released(base)
            before = {a: s.kv_transfer_bytes_total for a, s in base[1].items()}
            try:
                check_mixed32(label, client, prompts, expected)
                check_kv_bytes(label, pre, before, expected, lay)
            except Exception:  # noqa: BLE001
                check("%s: checks ran without an exception" % label, False, traceback.format_exc())
            ok, desc = wait_released(base)
            check("5: %s: every pool is back to start" % label, ok, desc)
            client.close()
        finally:
            up.proc.stop(wait=30)
        if flag == "int8":
            # KV only: a TP-2 decode worker quantizes its weight shards' own
            # activations, so int8 weights would not give TP 1's tokens.
            kv_only = ["--kv-cache-dtype", flag]
            check_tp(prompts[:8], mixed_expected(prompts[:8], kv_only, "kv" + flag + "-only"), kv_only)
    check_mismatch(prompts[0])


def check_tp(prompts, expected, ref):
    label = "router + 1P(tp1) + 1D(tp2) %s" % " ".join(ref)
    c = ManualCluster("kv-tp12", "tcp,self")
    try:
        started = c.start_workers([("prefill", "p0", ["--tp", "1", "--num-kv-blocks", "128"] + ref),
                                   ("decode", "d0", ["--tp", "2", "--num-kv-blocks", "128"] + ref)])
        ok, last = c.wait_registered(1, 1)
        if not check("%s: workers start and register" % label, started and ok, last):
            return
        base = snapshot([c.addr_of("d0")], [c.addr_of("p0")])
        client = state.tc.TandemClient(c.addr)
        check_mixed32(label, client, prompts, expected)
        client.close()
        ok, desc = wait_released(base)
        check("5: %s: every pool is back to start" % label, ok, desc)
    finally:
        c.stop()


def check_mismatch(prompt):
    label = "router + 1P(int8) + 1D(fp32)"
    c = ManualCluster("kv-mismatch", "tcp,self")
    try:
        started = c.start_workers([("prefill", "p-int8", ["--kv-cache-dtype", "int8", "--num-kv-blocks", "64"]),
                                   ("decode", "d-fp32", ["--num-kv-blocks", "64"])])
        ok, last = c.wait_registered(1, 1)
        if not check("%s: workers listen and register" % label, started and ok, last):
            return
        client = state.tc.TandemClient(c.addr)
        outcome = None
        try:
            got = client.generate_text(prompt, temperature=0, max_tokens=4, timeout=30)
            outcome = "completed: %r" % (got.token_ids,)
        except state.tc.DeadlineExceededError as e:
            outcome = "hung: %r" % (e,)
        except state.tc.TandemError as e:
            outcome = e
        client.close()
        prefill_log = c.workers["p-int8"][0].log_tail(20000)
        check("%s: the request fails (no hang, no tokens from mismatched KV): %s" % (label, type(outcome).__name__),
              isinstance(outcome, state.tc.TandemError) and not isinstance(outcome, state.tc.DeadlineExceededError),
              outcome)
        said = "--kv-cache-dtype" in prefill_log or "--kv-cache-dtype" in str(outcome)
        check("%s: the refusal names the dtypes and --kv-cache-dtype" % label,
              said and ("I8" in prefill_log or "I8" in str(outcome)), "%s\n%s" % (outcome, prefill_log[-1500:]))
    finally:
        c.stop()
