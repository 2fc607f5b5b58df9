#!/usr/bin/env python3
"""Runs the container's runtime stage without a container engine.

deploy/docker/stage_runtime.sh is the step that decides what the runtime
image holds (binaries, bundled model, shared libraries, UCX modules). This
test runs it on the build's binaries, adds what the runtime base image would
provide (the C library, libstdc++, libgcc_s and the loader: nothing else may
be missing), runs ldconfig as the Dockerfiles do, and then, chrooted into that
tree with /proc, /sys and /dev mounted in a private mount namespace:
  - every binary answers --help,
  - `tandem generate` gives exactly what the same binary gives outside,
  - a router, a prefill and a decode worker (KV over UCX tcp and mTLS
    between them with certificates from the staged `tandem certs`, as the
    Helm chart's defaults) serve a generation through `tandem client` with
    the same text, and `tandem health` (the chart's probe) answers SERVING
    with a pod's own certificate, and nothing without one.

Needs root (chroot, mount namespaces): exits 77 (skipped) otherwise.

  runtime_stage_test.py --bin-dir build/bin --source . --work DIR
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
import unittest

ARGS = None
BASE_LIBS = re.compile(r"^(ld-linux.*\.so\.\d+|libc\.so\.6|libm\.so\.6|libstdc\+\+\.so\.6|libgcc_s\.so\.1)$")
MODEL = "/opt/tandem/models/tandem-shakespeare"
BIN = "/opt/tandem/build/bin"
CERTS = "/tmp/cluster-certs"  # inside the chroot


def can_chroot():
  if os.geteuid() != 0 or not shutil.which("unshare"):
    return False
  r = subprocess.run(["unshare", "--mount", "--fork", "true"], capture_output=True, timeout=30)
  return r.returncode == 0


def ldd_paths(path):
  out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=60).stdout
  return re.findall(r"(?:=> )?(/\S+) \(0x", out)


class RuntimeStageTest(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    cls.root = os.path.join(ARGS.work, "stage")
    shutil.rmtree(cls.root, ignore_errors=True)
    subprocess.run([os.path.join(ARGS.source, "deploy", "docker", "stage_runtime.sh"), ARGS.bin_dir, cls.root],
                   check=True, timeout=300)
    # What the base image provides: whatever the staged files load that the
    # stage left out. Anything else missing is the stage script's bug.
    cls.from_base = set()
    staged = [os.path.join(d, f) for d, _, fs in os.walk(cls.root) for f in fs
              if f.startswith("tandem") or ".so" in f]
    for f in staged:
      for p in ldd_paths(f):
        real_dir = os.path.realpath(os.path.dirname(p))
        target = cls.root + os.path.join(real_dir, os.path.basename(p))
        if not os.path.exists(target):
          cls.from_base.add(os.path.basename(p))
          os.makedirs(os.path.dirname(target), exist_ok=True)
          shutil.copy(os.path.realpath(p), target)
          if os.path.dirname(p) != real_dir:  # e.g. /lib64/ld-linux: keep the path the binaries name
            alias = cls.root + p
            os.makedirs(os.path.dirname(alias), exist_ok=True)
            if not os.path.exists(alias):
              os.symlink(os.path.join(real_dir, os.path.basename(p)), alias)
    shutil.copy("/etc/ld.so.conf", cls.root + "/etc/ld.so.conf")
    shutil.copytree("/etc/ld.so.conf.d", cls.root + "/etc/ld.so.conf.d", dirs_exist_ok=True)
    subprocess.run(["ldconfig", "-r", cls.root], check=True, timeout=60)
    for d in ("proc", "sys", "dev", "tmp"):
      os.makedirs(os.path.join(cls.root, d), exist_ok=True)

  def chroot_cmd(self, argv):
    # A private mount namespace: the mounts vanish with the process.
    r = self.root
    script = (f"mount --make-rprivate / && mount -t proc proc {r}/proc && mount --rbind /sys {r}/sys && "
              f"mount --rbind /dev {r}/dev && exec chroot {r} \"$@\"")
    # --kill-child: stopping unshare stops the binary too (no orphans).
    return ["unshare", "--mount", "--fork", "--kill-child=SIGTERM", "sh", "-c", script, "sh"] + argv

  def run_in(self, argv, timeout=120):
    return subprocess.run(self.chroot_cmd(argv), capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "OMP_NUM_THREADS": "1", "UCX_TLS": "tcp"})

  def test_only_base_libraries_come_from_the_base(self):
    self.assertTrue(self.from_base)
    self.assertEqual([l for l in sorted(self.from_base) if not BASE_LIBS.match(l)], [])

  def test_ucx_modules_and_model_are_staged(self):
    ucx = [f for d, _, fs in os.walk(self.root) for f in fs if d.endswith("/ucx")]
    self.assertIn("libuct_cma.so.0", ucx)
    self.assertTrue(os.path.isfile(self.root + MODEL + "/model.safetensors"))

  def test_every_binary_answers_help(self):
    for b in ("tandem", "tandem-router", "tandem-prefill-worker", "tandem-decode-worker"):
      r = self.run_in([f"{BIN}/{b}", "--help"])
      self.assertEqual(r.returncode, 0, f"{b}: {r.stderr}")
      self.assertTrue(r.stdout.startswith(f"usage: {b}"), r.stdout[:80])

  def generate_args(self, model):
    return ["generate", "--model", model, "--prompt", "ROMEO:", "--max-tokens", "8", "--temperature", "0", "--json"]

  def test_generate_matches_outside(self):
    inside = self.run_in([f"{BIN}/tandem"] + self.generate_args(MODEL))
    self.assertEqual(inside.returncode, 0, inside.stderr)
    outside = subprocess.run([os.path.join(ARGS.bin_dir, "tandem")] +
                             self.generate_args(os.path.join(ARGS.source, "models", "tandem-shakespeare")),
                             capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    self.assertEqual(outside.returncode, 0, outside.stderr)
    self.assertEqual(json.loads(inside.stdout), json.loads(outside.stdout))
    self.assertEqual(len(json.loads(inside.stdout)["token_ids"]), 8)

  def tls_flags(self, stem):
    """A role's files from `tandem certs` (router, prefill-worker, decode-worker)."""
    return ["--tls-ca", f"{CERTS}/ca.crt", "--tls-cert", f"{CERTS}/{stem}.crt", "--tls-key", f"{CERTS}/{stem}.key"]

  def test_cluster_serves_a_generation(self):
    certs = self.run_in([f"{BIN}/tandem", "certs", "--out", CERTS, "--force"])
    self.assertEqual(certs.returncode, 0, certs.stderr)
    procs = []
    try:
      def start(argv):
        p = subprocess.Popen(self.chroot_cmd(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "OMP_NUM_THREADS": "1", "UCX_TLS": "tcp"})
        procs.append(p)
        seen, cluster = [], None
        for line in p.stdout:  # each binary prints one "listening on" line once it serves
          seen.append(line)
          m = re.search(r"cluster listener on (\S+:\d+)", line)  # the router's, before that line
          if m:
            cluster = m.group(1)
          m = re.search(r"listening on (\S+:\d+)", line)
          if m:
            return m.group(1), cluster
        self.fail(f"{argv[0]} exited: {''.join(seen)}")

      router, cluster = start([f"{BIN}/tandem-router", "--model", MODEL, "--host", "127.0.0.1", "--port", "0",
                               "--cluster-port", "0"] + self.tls_flags("router"))
      self.assertIsNotNone(cluster, "the router printed no cluster listener line")
      workers = {}
      for role in ("prefill", "decode"):
        workers[role], _ = start([f"{BIN}/tandem-{role}-worker", "--model", MODEL, "--host", "127.0.0.1",
                                  "--port", "0", "--router", cluster, "--kv-cache-memory", "64",
                                  "--kv-transport", "ucx"] + self.tls_flags(f"{role}-worker"))
      client = [f"{BIN}/tandem", "client", "--addr", router, "--prompt", "ROMEO:", "--max-tokens", "8",
                "--temperature", "0", "--json"]
      deadline = time.monotonic() + 60
      while True:  # the workers register within a second or so
        r = self.run_in(client)
        if r.returncode == 0 or time.monotonic() > deadline:
          break
        time.sleep(0.5)
      self.assertEqual(r.returncode, 0, r.stderr)
      served = json.loads(r.stdout.strip().splitlines()[-1])
      local = json.loads(self.run_in([f"{BIN}/tandem"] + self.generate_args(MODEL)).stdout)
      self.assertEqual(served["text"], local["text"])
      # The chart's probes: `tandem health` with the pod's own certificate,
      # naming its own role as the server's (the address is an IP).
      health = [f"{BIN}/tandem", "health", "--timeout-s", "10"]
      for addr, stem, service in ((workers["decode"], "decode-worker", ""),
                                  (workers["decode"], "decode-worker", "tandem.v1.DecodeWorker"),
                                  (cluster, "router", "tandem.v1.Generation"),
                                  (cluster, "router", "tandem.v1.WorkerRegistry")):
        r = self.run_in(health + ["--addr", addr, "--service", service, "--tls-peer", f"tandem-{stem}"] +
                        self.tls_flags(stem))
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "SERVING"), f"{addr} {service!r}: {r.stderr}")
      # mTLS: the decode worker's port answers nobody without a certificate
      # from the cluster CA, and no plaintext client.
      for flags in (["--tls-ca", f"{CERTS}/ca.crt", "--tls-peer", "tandem-decode-worker"], []):
        r = self.run_in(health + ["--addr", workers["decode"]] + flags)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("error", r.stdout)
    finally:
      # SIGTERM to the binaries themselves (unshare's forked children), as
      # Kubernetes would send it; unshare then exits with them.
      for p in procs:
        try:
          with open(f"/proc/{p.pid}/task/{p.pid}/children") as f:
            for child in f.read().split():
              os.kill(int(child), signal.SIGTERM)
        except (FileNotFoundError, ProcessLookupError):
          pass
      for p in procs:
        try:
          p.wait(timeout=20)
        except subprocess.TimeoutExpired:
          p.kill()
          p.wait()
        p.stdout.close()


def main():
  global ARGS
  ap = argparse.ArgumentParser()
  ap.add_argument("--bin-dir", required=True)
  ap.add_argument("--source", required=True)
  ap.add_argument("--work", required=True)
  ARGS, rest = ap.parse_known_args()
  if not can_chroot():
    print("runtime_stage_test: skipped: needs root and mount namespaces (unshare --mount)")
    sys.exit(77)
  os.makedirs(ARGS.work, exist_ok=True)
  ARGS.bin_dir = os.path.abspath(ARGS.bin_dir)
  ARGS.source = os.path.abspath(ARGS.source)
  unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
  main()
