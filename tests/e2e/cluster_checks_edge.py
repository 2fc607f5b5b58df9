"""Stage a's checks of single requests through a cluster: 6 the first chunk
is the prefill's token, 5c deadlines and 5d stop strings (blocks back each
time), 8 malformed requests (exact code, field named) and logprobs, 9
clients/python/example.py."""

import os
import sys

import cluster_state as state
from cluster_checks import wait_released
from cluster_refs import generate_one, same_as
from cluster_state import check, run
from e2e_util import field_bytes, malformed_requests, varint


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
          and chunks[-1].usage == state.tc.Usage(len(want["prompt_token_ids"]), 48)
          and ids == want["token_ids"] and "".join(c.text for c in chunks) == want["text"],
          "%s %r vs %s %r" % (ids, "".join(c.text for c in chunks), want["token_ids"], want["text"]))


def check_deadline(label, client, base):
    """5c. Deadlines passing mid-stream (and before the first token)."""
    mid, early, finished, other = 0, 0, 0, []
    for t in (0.001, 0.01, 0.03, 0.06, 0.1, 0.15, 0.3):
        n = 0
        try:
            for c in client.generate("ROMEO:", temperature=0, max_tokens=200, ignore_eos=True, timeout=t):
                n += len(c.token_ids)
            finished += 1  # faster than its deadline: fine
        except state.tc.DeadlineExceededError:
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
        except state.tc.TandemError as e:
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
        except state.tc.TandemError as e:
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
    raw = state.public_channel(addr)
    call = raw.unary_stream("/tandem.v1.Generation/Generate", request_serializer=lambda b: b,
                            response_deserializer=state.tc.pb2.GenerateResponse.FromString)
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
    example = os.path.join(state.ARGS.source, "clients", "python", "example.py")
    rc, out, err = run([sys.executable, example, "--addr", addr, "--prompt", "ROMEO:", "--max-tokens", "16",
                        "--temperature", "0"], timeout=120)
    check("9: %s: example.py exits 0" % label, rc == 0, err)
    check("9: %s: example.py prints the prompt and the streamed completion" % label,
          out == "ROMEO:" + want["text"] + "\n", "%r vs %r" % (out, "ROMEO:" + want["text"] + "\n"))
    check("9: %s: example.py reports finish and usage" % label,
          "[finish: %s, prompt tokens: %d, completion tokens: %d]" % (
              want["finish_reason"], len(want["prompt_token_ids"]), len(want["token_ids"])) in err, err)
