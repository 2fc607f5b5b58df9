#!/usr/bin/python3
"""End-to-end checks of `tandem certs` against the openssl command line tool.

Run by CTest (label e2e, tests/e2e/serve.cmake). Writes a cluster CA and the
role certificates into the work dir and checks, with `openssl` (an
independent implementation of the same standards): every certificate
verifies against the CA and not against another CA, each names its role as
CN and DNS SAN plus the extra names asked for, is usable for both TLS server
and client authentication, keys are private (0600) and match their
certificates; existing files are not replaced without --force; bad names are
usage errors. One PASS/FAIL line per check, then "N passed, M failed".

  certs_test.py --tandem build/bin/tandem --work DIR
"""

import argparse
import os
import shutil
import stat
import subprocess
import sys

PASSED, FAILED = [], []
ROLES = {"router": "tandem-router", "prefill-worker": "tandem-prefill-worker",
         "decode-worker": "tandem-decode-worker"}


def check(name, cond, detail=""):
    (PASSED if cond else FAILED).append(name)
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else ": " + str(detail)[:2000]), flush=True)
    return cond


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tandem", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    d = os.path.join(args.work, "certs")
    rc, out, err = run([args.tandem, "certs", "--out", d, "--dns", "localhost", "--ip", "127.0.0.1",
                        "--ip", "::1", "--days", "30"])
    check("tandem certs writes the files", rc == 0 and sorted(os.listdir(d)) == sorted(
        ["ca.crt", "ca.key"] + ["%s.%s" % (r, e) for r in ROLES for e in ("crt", "key")]), (rc, err))
    other = os.path.join(args.work, "other")
    run([args.tandem, "certs", "--out", other])
    for stem, role in ROLES.items():
        crt, key = os.path.join(d, stem + ".crt"), os.path.join(d, stem + ".key")
        rc, out, err = run(["openssl", "verify", "-CAfile", os.path.join(d, "ca.crt"), crt])
        check("%s: openssl verifies it against the CA" % stem, rc == 0 and out.strip().endswith("OK"), out + err)
        rc, out, err = run(["openssl", "verify", "-CAfile", os.path.join(other, "ca.crt"), crt])
        check("%s: ... and not against another CA" % stem, rc != 0, out)
        for purpose in ("sslserver", "sslclient"):
            rc, out, err = run(["openssl", "verify", "-purpose", purpose, "-CAfile", os.path.join(d, "ca.crt"), crt])
            check("%s: valid for %s" % (stem, purpose), rc == 0, out + err)
        rc, out, err = run(["openssl", "x509", "-in", crt, "-noout", "-subject", "-ext", "subjectAltName"])
        check("%s: CN and SANs name the role and the extra names" % stem,
              rc == 0 and ("CN = " + role) in out and ("DNS:%s, DNS:localhost, IP Address:127.0.0.1, "
                                                       "IP Address:0:0:0:0:0:0:0:1" % role) in out, out + err)
        check("%s: the key is readable by its owner only" % stem, stat.S_IMODE(os.stat(key).st_mode) == 0o600)
        _, pub_crt, _ = run(["openssl", "x509", "-in", crt, "-noout", "-pubkey"])
        _, pub_key, _ = run(["openssl", "pkey", "-in", key, "-pubout"])
        check("%s: the key matches the certificate" % stem, pub_crt and pub_crt == pub_key)
    rc, out, err = run(["openssl", "x509", "-in", os.path.join(d, "ca.crt"), "-noout", "-ext", "basicConstraints"])
    check("the CA is a CA", "CA:TRUE" in out, out + err)
    before = open(os.path.join(d, "ca.crt")).read()
    rc, out, err = run([args.tandem, "certs", "--out", d])
    check("existing files are not replaced without --force",
          rc == 1 and "--force" in err and open(os.path.join(d, "ca.crt")).read() == before, (rc, err))
    rc, out, err = run([args.tandem, "certs", "--out", d, "--force"])
    check("--force replaces them", rc == 0 and open(os.path.join(d, "ca.crt")).read() != before, (rc, err))
    for bad in (["--ip", "10.0.0.300"], ["--dns", "a,DNS:tandem-router"], ["--days", "0"], []):
        target = [] if bad == [] else ["--out", os.path.join(args.work, "bad")]
        rc, out, err = run([args.tandem, "certs"] + target + bad)
        check("usage error for %s" % (bad or "no --out"), rc == 2 and err, (rc, err))
    print("%d passed, %d failed" % (len(PASSED), len(FAILED)))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
