#!/usr/bin/env python3
"""Checks the Secrets and probes of deploy/helm/tandem, rendered as
helm_chart_test.py renders it (helm_chart_util.py: the same value sets).

Cluster mTLS (clusterTls): every pod mounts its role's Secret read-only and
its binary gets the three files (or, with clusterTls.enabled false,
--insecure-cluster and no Secret); the probes are exec probes running the
image's `tandem health` with the pod's certificate (flags checked against
`tandem health --help`, the shell script run under /bin/sh with a stand-in
binary), or grpc: probes when the cluster is plaintext. The router's public
TLS and API key Secrets.

  helm_chart_tls_test.py --bin-dir build/bin [unittest args]
"""

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import unittest

import gotemplate
import helm_chart_util
from helm_chart_util import (CLUSTER_TLS_DIR, RELEASE, ROLES, by_kind, component_of, container_argv, defaults,
                             help_flags, parse_flags, pod_spec, render_all, renderer, workloads)

# What every exec probe's shell runs before `exec BIN_DIR/tandem health ...`:
# the pod IP, bracketed when it is IPv6 (as the binaries write addresses).
EXEC_PREFIX = 'a=$POD_IP; case $a in *:*) a="[$a]";; esac; exec '


def exec_probe_argv(probe):
  """The argv an exec probe's shell execs, with $a left as written."""
  cmd = probe["exec"]["command"]
  assert cmd[:2] == ["/bin/sh", "-c"] and len(cmd) == 3, cmd
  assert cmd[2].startswith(EXEC_PREFIX), cmd[2]
  return shlex.split(cmd[2][len(EXEC_PREFIX):])


def secret_name(values, comp):
  return values["clusterTls"]["secretNames"][comp] or f"{RELEASE}-{comp}-tls"


class ChartTlsTest(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    cls.rendered, cls.values = render_all()

  def test_cluster_tls_secret_per_role(self):
    """clusterTls on: each pod mounts its role's Secret read-only and its binary
    reads the three files from it; off: --insecure-cluster and nothing mounted."""
    for name, objs in self.rendered.items():
      values = self.values[name]
      for w in workloads(objs):
        comp = component_of(w)
        (c,) = pod_spec(w)["containers"]
        flags = parse_flags(container_argv(objs, w, c)[2])
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(w)["volumes"]}
        with self.subTest(values=name, component=comp):
          self.assertTrue(all(m["readOnly"] for m in mounts.values()), mounts)
          if not values["clusterTls"]["enabled"]:
            self.assertEqual(flags["insecure-cluster"], "true")
            self.assertFalse({"tls-ca", "tls-cert", "tls-key"} & set(flags))
            self.assertNotIn("cluster-tls", volumes)
            self.assertNotIn("cluster-tls", mounts)
            self.assertNotIn(CLUSTER_TLS_DIR, [m["mountPath"] for m in mounts.values()])
            continue
          self.assertNotIn("insecure-cluster", flags)
          self.assertEqual((flags["tls-ca"], flags["tls-cert"], flags["tls-key"]),
                           (f"{CLUSTER_TLS_DIR}/ca.crt", f"{CLUSTER_TLS_DIR}/tls.crt", f"{CLUSTER_TLS_DIR}/tls.key"))
          self.assertEqual(mounts["cluster-tls"], {"name": "cluster-tls", "mountPath": CLUSTER_TLS_DIR,
                                                   "readOnly": True})
          self.assertEqual(volumes["cluster-tls"], {"name": "cluster-tls",
                                                    "secret": {"secretName": secret_name(values, comp)}})
    # The defaults name the Secrets after the release; custom names (the gpu set) reach the volumes.
    for name, want in (("default", {"router": "tandem-router-tls", "prefill": "tandem-prefill-tls",
                                    "decode": "tandem-decode-tls"}),
                       ("gpu", {"router": "r-mtls", "prefill": "p-mtls", "decode": "d-mtls"})):
      got = {component_of(w): {v["name"]: v for v in pod_spec(w)["volumes"]}["cluster-tls"]["secret"]["secretName"]
             for w in workloads(self.rendered[name])}
      self.assertEqual(got, want, name)
    self.assertEqual([n for n, v in self.values.items() if not v["clusterTls"]["enabled"]], ["insecure"])

  def test_every_container_probes_its_port(self):
    """Three probes on the binary's own ports: exec `tandem health` with the
    pod's certificate under clusterTls, grpc: probes without it."""
    health_flags = help_flags("tandem", "health")
    for name, objs in self.rendered.items():
      values = self.values[name]
      for w in workloads(objs):
        comp = component_of(w)
        for c in pod_spec(w)["containers"]:
          with self.subTest(values=name, container=c["name"]):
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            flags = parse_flags(container_argv(objs, w, c)[2])
            self.assertEqual(str(ports["grpc"]), flags["port"])
            self.assertEqual(str(ports["metrics"]), flags["metrics-port"])
            # Readiness: the whole server (NOT_SERVING while it cannot take
            # work). Startup/liveness: a service SERVING while the process
            # runs. The router's all on its cluster port, where the registry
            # is and tandem.v1.Generation is mirrored (the public port may
            # have TLS of its own).
            live = {"router": "tandem.v1.WorkerRegistry", "prefill": "tandem.v1.PrefillWorker",
                    "decode": "tandem.v1.DecodeWorker"}[comp]
            ready = {"port": ports["grpc"]}
            live_port = ports["grpc"]
            if comp == "router":
              live_port = ports["cluster"]
              self.assertEqual(str(live_port), flags["cluster-port"])
              self.assertEqual(sorted(ports), ["cluster", "grpc", "http", "metrics"])
              ready = {"port": ports["cluster"], "service": "tandem.v1.Generation"}
            want = {"startupProbe": {"port": live_port, "service": live}, "readinessProbe": ready,
                    "livenessProbe": {"port": live_port, "service": live}}
            for probe, target in want.items():
              p = c[probe]
              self.assertGreater(p["periodSeconds"], 0)
              self.assertEqual(p["timeoutSeconds"], values["probes"]["timeoutSeconds"])
              if not values["clusterTls"]["enabled"]:
                self.assertEqual(set(p) - {"periodSeconds", "failureThreshold", "timeoutSeconds"}, {"grpc"})
                self.assertEqual(p["grpc"], target)
                continue
              self.assertNotIn("grpc", p)
              argv = exec_probe_argv(p)
              self.assertEqual(argv[:2], [f"{values['image']['binDir']}/tandem", "health"])
              hf = parse_flags(argv[2:])
              self.assertEqual(sorted(set(hf) - health_flags), [], "flags tandem health --help does not list")
              got = {"port": int(hf.pop("addr").removeprefix("$a:"))}
              if "service" in hf:
                got["service"] = hf.pop("service")
              self.assertEqual(got, target, probe)
              # The pod's own certificate, and its own role as the server's name.
              self.assertEqual(hf, {"timeout-s": str(values["probes"]["timeoutSeconds"] - 1),
                                    "tls-ca": f"{CLUSTER_TLS_DIR}/ca.crt", "tls-cert": f"{CLUSTER_TLS_DIR}/tls.crt",
                                    "tls-key": f"{CLUSTER_TLS_DIR}/tls.key", "tls-peer": ROLES[comp]})
            env = {e["name"]: e for e in c["env"]}
            self.assertEqual(env["POD_IP"]["valueFrom"], {"fieldRef": {"fieldPath": "status.podIP"}})

  def test_exec_probe_script_under_sh(self):
    """The probe's shell dials the pod IP, bracketed when IPv6, and passes
    every flag as one argument (a stand-in prints the argv it gets)."""
    with tempfile.TemporaryDirectory() as d:
      with open(os.path.join(d, "tandem"), "w") as f:
        f.write('#!/bin/sh\nprintf "%s\\n" "$@"\n')
      os.chmod(os.path.join(d, "tandem"), 0o755)
      v = defaults()
      v["image"]["binDir"] = d
      objs = helm_chart_util.render_objects(v)
      (c,) = pod_spec(by_kind(objs, "StatefulSet")["tandem-decode"])["containers"]
      for pod_ip, addr in (("10.1.2.3", "10.1.2.3:50053"), ("fd00::5", "[fd00::5]:50053")):
        r = subprocess.run(c["livenessProbe"]["exec"]["command"], capture_output=True, text=True, timeout=30,
                           env={"PATH": "/usr/bin:/bin", "POD_IP": pod_ip})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines(), [
            "health", f"--addr={addr}", "--service=tandem.v1.DecodeWorker", "--timeout-s=4",
            f"--tls-ca={CLUSTER_TLS_DIR}/ca.crt", f"--tls-cert={CLUSTER_TLS_DIR}/tls.crt",
            f"--tls-key={CLUSTER_TLS_DIR}/tls.key", "--tls-peer=tandem-decode-worker"])

  def test_probe_timeout_leaves_tandem_health_a_deadline(self):
    v = defaults()
    v["probes"]["timeoutSeconds"] = 1
    with self.assertRaisesRegex(gotemplate.TemplateError, "at least 2 with clusterTls.enabled"):
      renderer().render(v)
    v["clusterTls"]["enabled"] = False  # grpc: probes have no deadline of their own
    renderer().render(v)

  def test_api_key_secret(self):
    """Off by default; with a Secret, the router reads the key file mounted from it, read-only."""
    for name, objs in self.rendered.items():
      router = by_kind(objs, "Deployment")["tandem-router"]
      (c,) = pod_spec(router)["containers"]
      flags = parse_flags(container_argv(objs, router, c)[2])
      secret = self.values[name]["router"]["apiKeys"]["secretName"]
      with self.subTest(values=name):
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(router)["volumes"]}
        if not secret:
          self.assertNotIn("api-key-file", flags)
          self.assertNotIn("api-keys", volumes)
          continue
        key = self.values[name]["router"]["apiKeys"]["secretKey"]
        self.assertEqual(flags["api-key-file"], f"/etc/tandem-api-keys/{key}")
        self.assertEqual(mounts["api-keys"], {"name": "api-keys", "mountPath": "/etc/tandem-api-keys",
                                              "readOnly": True})
        self.assertEqual(volumes["api-keys"], {"name": "api-keys", "secret": {"secretName": secret}})
    self.assertTrue(any(self.values[n]["router"]["apiKeys"]["secretName"] for n in self.rendered))

  def test_public_tls_secret(self):
    """Off by default; with a kubernetes.io/tls Secret, the router serves its public port with it."""
    for name, objs in self.rendered.items():
      router = by_kind(objs, "Deployment")["tandem-router"]
      (c,) = pod_spec(router)["containers"]
      flags = parse_flags(container_argv(objs, router, c)[2])
      secret = self.values[name]["router"]["publicTls"]["secretName"]
      with self.subTest(values=name):
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(router)["volumes"]}
        if not secret:
          self.assertNotIn("public-tls-cert", flags)
          self.assertNotIn("public-tls", volumes)
          continue
        self.assertEqual((flags["public-tls-cert"], flags["public-tls-key"]),
                         ("/etc/tandem-public-tls/tls.crt", "/etc/tandem-public-tls/tls.key"))
        self.assertEqual(mounts["public-tls"], {"name": "public-tls", "mountPath": "/etc/tandem-public-tls",
                                                "readOnly": True})
        self.assertEqual(volumes["public-tls"], {"name": "public-tls", "secret": {"secretName": secret}})
    self.assertTrue(any(self.values[n]["router"]["publicTls"]["secretName"] for n in self.rendered))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--bin-dir", required=True, help="where the tandem binary is (for tandem health --help)")
  args, rest = ap.parse_known_args()
  helm_chart_util.BIN_DIR = args.bin_dir
  unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
  main()
