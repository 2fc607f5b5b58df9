"""serve_test's shared state and helpers: the PASS/FAIL report (check,
PASSED, FAILED), running commands, waiting for SERVING, and the reference
outputs from `tandem generate`. One copy for every serve_test module."""

import json
import os
import subprocess
import threading
import time


PASSED, FAILED = [], []
_print_lock = threading.Lock()


def check(name, cond, detail=""):
    (PASSED if cond else FAILED).append(name)
    with _print_lock:
        print(("PASS " if cond else "FAIL ") + name + ("" if cond else ": " + str(detail)[:2000]), flush=True)
    return cond


def run(cmd, timeout=300):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


# ------------------------------------------------------------ the server

def wait_serving(client, timeout=30):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            status = client.health(timeout=2)
            if status == "SERVING":
                return True, status
            last = status
        except Exception as e:  # noqa: BLE001 — not up yet
            last = e
        time.sleep(0.1)
    return False, last


# ------------------------------------------------------------ prompts

# (max_tokens, ignore_eos, stop_token_ids) groups: `tandem generate` takes one
# of each per run. The bundled model never picks eos greedily within these
# lengths, so newline stop ids ("\n", "\n\n") make some requests end early.
GROUPS = [(8, False, []), (24, True, []), (40, False, [10, 272]), (64, True, [10])]


def generate_many(args, prompts, max_tokens, ignore_eos, stop_ids, tag):
    path = os.path.join(args.work, "prompts_%s.txt" % tag)
    with open(path, "w") as f:
        f.write("\n".join(prompts) + "\n")
    cmd = [args.tandem, "generate", "--prompts-file", path, "--temperature", "0",
           "--max-tokens", str(max_tokens), "--json"] + (["--ignore-eos"] if ignore_eos else [])
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


def generate_one(args, prompt, *flags):
    rc, out, err = run([args.tandem, "generate", "--prompt", prompt, "--json"] + list(flags))
    if rc != 0:
        raise RuntimeError("generate failed (%d): %s" % (rc, err))
    return json.loads(out.splitlines()[0])
