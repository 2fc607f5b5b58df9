#!/usr/bin/python3
"""End-to-end checks of API keys (--api-key-file) and TLS (--public-tls-cert) on every public entry point.

Run by CTest (label e2e, tests/e2e/serve.cmake). Starts `tandem serve` and
`tandem up` on 127.0.0.1 with a key file, always stops them by PID, and checks
through the Python client (clients/python), the C++ client (`tandem client`)
and raw grpcio: no key or a wrong one is UNAUTHENTICATED, a right key streams
exactly what `tandem generate` computes, health stays open, SIGHUP rotates the
keys (a bad file keeps the old ones), per-key limits answer RESOURCE_EXHAUSTED,
and no key ever appears in a log. With --public-tls-cert/--public-tls-key
(certificates from `tandem certs`): clients trusting the CA get through
(Python client, `tandem client --tls-ca`), plaintext clients do not, and a
key that does not match its certificate is a usage error. One PASS/FAIL line per check, then
"N passed, M failed"; exits non-zero on any failure.

  api_keys_test.py --tandem build/bin/tandem --source . --work DIR
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_util import Proc, ServeProc  # noqa: E402

PASSED, FAILED = [], []
KEYS = ("sk-e2e-alpha-0001", "sk-e2e-beta-0002", "sk-e2e-gamma-0003")
PROMPT = "ROMEO:"


def check(name, cond, detail=""):
    (PASSED if cond else FAILED).append(name)
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else ": " + str(detail)[:2000]), flush=True)
    return cond


def run(cmd, env=None, timeout=300):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return p.returncode, p.stdout, p.stderr


def reference_tokens(args, max_tokens):
    rc, out, err = run([args.tandem, "generate", "--prompt", PROMPT, "--temperature", "0", "--ignore-eos",
                        "--max-tokens", str(max_tokens), "--json"])
    if rc != 0:
        raise RuntimeError("tandem generate failed: " + err)
    return json.loads(out.splitlines()[-1])["token_ids"]


def outcome(tc, client, **kw):
    """("OK", token ids) or (error class name, message)."""
    try:
        done = client.generate_text(PROMPT, temperature=0, ignore_eos=True, **kw)
        return "OK", done.token_ids
    except tc.TandemError as e:
        return type(e).__name__, str(e)


def write_keys(path, lines):
    with open(path, "w") as f:
        f.write("# e2e keys\n" + "\n".join(lines) + "\n")


def wait_for(pred, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def check_serve(args, tc, want):
    keys = os.path.join(args.work, "serve_keys.txt")
    write_keys(keys, [KEYS[0] + " name=alpha", KEYS[1] + " name=beta max_streams=1 tokens_per_minute=40"])
    srv = ServeProc(args.tandem, ["--api-key-file", keys], os.path.join(args.work, "serve.log"))
    try:
        if not check("serve: listening with --api-key-file", srv.wait_listening(), srv.log_tail()):
            return
        open_client = tc.TandemClient(srv.addr, timeout=60, api_key="")
        check("serve: health answers without a key", open_client.health() == "SERVING")
        got = outcome(tc, open_client, max_tokens=8)
        check("serve: no key -> UNAUTHENTICATED", got[0] == "UnauthenticatedError", got)
        got = outcome(tc, tc.TandemClient(srv.addr, timeout=60, api_key="sk-e2e-wrong"), max_tokens=8)
        check("serve: a wrong key -> UNAUTHENTICATED", got[0] == "UnauthenticatedError", got)
        got = outcome(tc, tc.TandemClient(srv.addr, timeout=60, api_key=KEYS[0]), max_tokens=8)
        check("serve: the right key streams the reference tokens", got == ("OK", want), (got, want))

        # The C++ client: --api-key, $TANDEM_API_KEY, and nothing.
        base = [args.tandem, "client", "--addr", srv.addr, "--prompt", PROMPT, "--temperature", "0",
                "--ignore-eos", "--max-tokens", "8", "--json"]
        rc, out, err = run(base + ["--api-key", KEYS[0]])
        check("tandem client --api-key streams the reference tokens",
              rc == 0 and json.loads(out.splitlines()[-1]).get("token_ids") == want, (rc, out, err))
        env = dict(os.environ, TANDEM_API_KEY=KEYS[0])
        rc, out, err = run(base, env=env)
        check("tandem client takes $TANDEM_API_KEY", rc == 0, (rc, err))
        env.pop("TANDEM_API_KEY")
        rc, out, err = run(base, env=env)
        check("tandem client without a key fails UNAUTHENTICATED", rc != 0 and "UNAUTHENTICATED" in err.upper(),
              (rc, err))

        # beta: 40 tokens a minute; prompt (3) + 30 fits once, not twice.
        beta = tc.TandemClient(srv.addr, timeout=60, api_key=KEYS[1])
        first = outcome(tc, beta, max_tokens=30)
        second = outcome(tc, beta, max_tokens=30)
        check("serve: a key over its tokens per minute -> RESOURCE_EXHAUSTED",
              first[0] == "OK" and second[0] == "ResourceExhaustedError", (first, second))

        # Rotation: SIGHUP re-reads the file; a bad file keeps the keys in force.
        write_keys(keys, [KEYS[2] + " name=gamma"])
        os.kill(srv.pid, signal.SIGHUP)
        check("serve: SIGHUP reloads the keys",
              wait_for(lambda: any("reloaded 1 API keys" in line for line in srv.stdout)), srv.stdout[-5:])
        got_old = outcome(tc, tc.TandemClient(srv.addr, timeout=60, api_key=KEYS[0]), max_tokens=4)
        got_new = outcome(tc, tc.TandemClient(srv.addr, timeout=60, api_key=KEYS[2]), max_tokens=8)
        check("serve: after rotation the old key is refused and the new one streams",
              got_old[0] == "UnauthenticatedError" and got_new == ("OK", want), (got_old, got_new))
        write_keys(keys, [KEYS[0] + " colour=red"])
        os.kill(srv.pid, signal.SIGHUP)
        check("serve: a bad key file on SIGHUP keeps the old keys",
              wait_for(lambda: "kept the old API keys" in srv.log_tail()) and
              outcome(tc, tc.TandemClient(srv.addr, timeout=60, api_key=KEYS[2]), max_tokens=8) == ("OK", want),
              srv.log_tail())
        check("serve: still alive after the SIGHUPs", srv.alive())
    finally:
        rc = srv.stop()
        check("serve: exits 0 on SIGTERM", rc == 0, rc)
        logs = srv.log_tail(10 ** 7) + "".join(srv.stdout)
        check("serve: no key appears in its output", not any(k in logs for k in KEYS))


def check_tls(args, tc, want):
    import grpc
    certs = os.path.join(args.work, "certs")
    rc, _, err = run([args.tandem, "certs", "--out", certs, "--ip", "127.0.0.1", "--dns", "localhost"])
    if not check("tls: tandem certs", rc == 0, err):
        return
    keys = os.path.join(args.work, "tls_keys.txt")
    write_keys(keys, [KEYS[0]])
    crt, key = os.path.join(certs, "router.crt"), os.path.join(certs, "router.key")
    rc, _, err = run([args.tandem, "serve", "--port", "0", "--public-tls-cert", crt, "--public-tls-key",
                      os.path.join(certs, "decode-worker.key")])
    check("tls: a key that is not the certificate's is a usage error", rc == 2 and "does not belong" in err, (rc, err))
    rc, _, err = run([args.tandem, "serve", "--port", "0", "--public-tls-cert", crt])
    check("tls: --public-tls-cert without --public-tls-key is a usage error", rc == 2 and "together" in err,
          (rc, err))
    srv = ServeProc(args.tandem, ["--api-key-file", keys, "--public-tls-cert", crt, "--public-tls-key", key],
                    os.path.join(args.work, "serve_tls.log"))
    try:
        if not check("tls: serve listening with --public-tls-cert", srv.wait_listening(), srv.log_tail()):
            return
        with open(os.path.join(certs, "ca.crt"), "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        got = outcome(tc, tc.TandemClient(srv.addr, timeout=60, credentials=creds, api_key=KEYS[0]), max_tokens=8)
        check("tls: a client trusting the CA streams the reference tokens", got == ("OK", want), got)
        got = outcome(tc, tc.TandemClient(srv.addr, timeout=10, api_key=KEYS[0]), max_tokens=8)
        check("tls: a plaintext client does not get through", got[0] == "UnavailableError", got)
        got = outcome(tc, tc.TandemClient(srv.addr, timeout=60, credentials=creds, api_key=""), max_tokens=8)
        check("tls: ... and keys are still required over TLS", got[0] == "UnauthenticatedError", got)
        rc, out, err = run([args.tandem, "client", "--addr", srv.addr, "--tls-ca", os.path.join(certs, "ca.crt"),
                            "--api-key", KEYS[0], "--prompt", PROMPT, "--temperature", "0", "--ignore-eos",
                            "--max-tokens", "8", "--json"])
        check("tls: tandem client --tls-ca streams the reference tokens",
              rc == 0 and json.loads(out.splitlines()[-1]).get("token_ids") == want, (rc, out, err))
        rc, out, err = run([args.tandem, "client", "--addr", srv.addr, "--api-key", KEYS[0], "--prompt", PROMPT,
                            "--max-tokens", "2", "--timeout-s", "10"])
        check("tls: tandem client without --tls-ca fails UNAVAILABLE", rc != 0 and "UNAVAILABLE" in err, (rc, err))
    finally:
        srv.stop()


def check_up(args, tc, want):
    keys = os.path.join(args.work, "up_keys.txt")
    write_keys(keys, [KEYS[0]])
    env = dict(os.environ, UCX_TLS="tcp,self")
    up = Proc("up", [args.tandem, "up", "--port", "0", "--api-key-file", keys],
              os.path.join(args.work, "up.log"), env=env)
    try:
        members = {}
        addr = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and addr is None:
            line = up.next_line(deadline)
            if line is None:
                break
            m = re.search(r"^tandem up: (\S+) pid (\d+) on (\S+)", line)
            if m:
                members[m.group(1)] = int(m.group(2))
            m = re.search(r"^tandem up: ready on (\S+)", line)
            if m:
                addr = m.group(1)
        if not check("up: the cluster comes up with --api-key-file", addr is not None, up.log_tail()):
            return
        got = outcome(tc, tc.TandemClient(addr, timeout=120, api_key=""), max_tokens=8)
        check("up: the router refuses a call without a key", got[0] == "UnauthenticatedError", got)
        got = outcome(tc, tc.TandemClient(addr, timeout=120, api_key=KEYS[0]), max_tokens=8)
        check("up: the router streams the reference tokens for the right key", got == ("OK", want), (got, want))
        write_keys(keys, [KEYS[1]])
        os.kill(members["router"], signal.SIGHUP)
        ok = wait_for(lambda: outcome(tc, tc.TandemClient(addr, timeout=120, api_key=KEYS[0]),
                                      max_tokens=2)[0] == "UnauthenticatedError", 30)
        got = outcome(tc, tc.TandemClient(addr, timeout=120, api_key=KEYS[1]), max_tokens=8)
        check("up: SIGHUP to the router rotates its keys", ok and got == ("OK", want), got)
    finally:
        rc = up.stop(wait=30)
        check("up: exits 0 on SIGTERM", rc == 0, rc)
        check("up: no key appears in its output",
              not any(k in up.log_tail(10 ** 7) + "".join(up.stdout) for k in KEYS))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tandem", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    args.tandem = os.path.abspath(args.tandem)
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ["TANDEM_CLIENT_STUBS"] = os.path.join(args.work, "stubs")
    os.environ.pop("TANDEM_API_KEY", None)
    sys.path.insert(0, os.path.join(os.path.abspath(args.source), "clients", "python"))
    try:
        import tandem_client as tc
        want = reference_tokens(args, 8)
        check_serve(args, tc, want)
        check_tls(args, tc, want)
        check_up(args, tc, want)
    except Exception:  # noqa: BLE001
        check("no exception", False, traceback.format_exc())
    print("%d passed, %d failed" % (len(PASSED), len(FAILED)))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
