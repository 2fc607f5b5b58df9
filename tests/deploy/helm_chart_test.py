#!/usr/bin/env python3
"""Checks deploy/helm/tandem without helm or a cluster.

Renders every template with tests/deploy/gotemplate.py (the Go-template subset
the chart keeps to) under the default values and five other value sets
(helm_chart_util.py), and checks what a broken chart would get wrong: YAML
that does not parse or has duplicate keys, objects without
apiVersion/kind/metadata.name, values that no template uses, flags the
binaries do not have (against their --help), values that do not reach
exactly their flag, Service ports that point at no container port, monitors
and HPAs that point at nothing. The Secrets (cluster mTLS, public TLS, API
keys) and the probes are helm_chart_tls_test.py's.

What it cannot prove: that Helm renders byte-for-byte the same (the renderer
is not Helm), or that Kubernetes accepts the objects (no schema validation,
no API server). deploy/helm/tandem/README.md says the same.

  helm_chart_test.py --bin-dir build/bin [unittest args]
"""

import argparse
import hashlib
import re
import sys
import unittest

import gotemplate
import helm_chart_util
from helm_chart_util import (BINARIES, CLUSTER_TLS_FLAGS, PER_POD, RELEASE, VALUE_SETS, VALUE_TO_FLAG,
                             by_kind, cluster_tls_flags, component_of, container_argv, defaults, flags_of,
                             leaf, parse_flags, pod_spec, render_all, renderer, workloads)

# Flags of a binary that the chart deliberately does not set, and why. Any
# other flag in a binary's --help must be set by the chart, so a new flag
# fails this test until it is mapped to a value (or listed here). The cluster
# TLS flags are set by mode (CLUSTER_TLS_FLAGS). test_api_key_secret and
# test_public_tls_secret are in helm_chart_tls_test.py.
NOT_MAPPED = {
    "router": {
        "help": "prints usage",
        "prefill-workers": "static worker lists: in the chart, workers register themselves",
        "decode-workers": "static worker lists: in the chart, workers register themselves",
        "api-key-file": "set to the mounted Secret only with router.apiKeys.secretName (test_api_key_secret)",
        "public-tls-cert": "set to the mounted Secret only with router.publicTls.secretName (test_public_tls_secret)",
        "public-tls-key": "set to the mounted Secret only with router.publicTls.secretName (test_public_tls_secret)",
        "cluster-host": "a pod has one address: the cluster listener listens on router.host like the public one; "
                        "only the ClusterIP Service <release>-router-cluster exposes it (test_control_plane_is_internal)",
        "http-threads": "one event-loop thread carries hundreds of streams; extraArgs for more",
        "served-model-name": "the model directory's name by default; extraArgs to rename",
        "chat-template": "the model's own template by default; extraArgs with a file on the model volume",
        "kv-overlap-weight": "kv-aware routing's default weight; extraArgs to tune it",
    },
    "prefill": {"help": "prints usage"},
    "decode": {"help": "prints usage"},
}


# ------------------------------------------------------------------ tests ---

class RendererTest(unittest.TestCase):
  """The renderer's Go semantics, on small templates with exact output."""

  def render(self, text, values):
    p = gotemplate._Parser(text, "t")
    nodes = p.parse()
    r = renderer()
    saved = r.defines
    r.defines = dict(saved, **p.defines)
    try:
      root = {"Values": gotemplate.VMap(values, ())}
      return r._exec(nodes, gotemplate.V(root), [{"$": gotemplate.V(root)}])
    finally:
      r.defines = saved

  def test_trim_markers(self):
    self.assertEqual(self.render("a  {{- 1 -}}  \n b", {}), "a1b")
    self.assertEqual(self.render("a {{ 1 }} b", {}), "a 1 b")

  def test_if_else_if_else(self):
    t = "{{ if .Values.a }}A{{ else if .Values.b }}B{{ else }}C{{ end }}"
    self.assertEqual(self.render(t, {"a": 1, "b": 1}), "A")
    self.assertEqual(self.render(t, {"a": 0, "b": "x"}), "B")
    self.assertEqual(self.render(t, {"a": [], "b": {}}), "C")

  def test_range_map_sorted_list_and_else(self):
    t = "{{ range $k, $v := .Values.m }}{{ $k }}={{ $v }};{{ end }}"
    self.assertEqual(self.render(t, {"m": {"b": 2, "a": 1}}), "a=1;b=2;")
    self.assertEqual(self.render("{{ range .Values.l }}[{{ . }}]{{ else }}none{{ end }}", {"l": ["x", "y"]}), "[x][y]")
    self.assertEqual(self.render("{{ range .Values.l }}[{{ . }}]{{ else }}none{{ end }}", {"l": []}), "none")

  def test_with_variables_and_root(self):
    t = "{{ $x := .Values.a }}{{ with .Values.b }}{{ . }}{{ $x }}{{ $.Values.a }}{{ end }}"
    self.assertEqual(self.render(t, {"a": "A", "b": "B"}), "BAA")

  def test_functions(self):
    v = {"n": 3, "s": "ab", "m": {"k": 1}, "t": True}
    self.assertEqual(self.render('{{ printf "%s-%d-%v" .Values.s .Values.n .Values.t }}', v), "ab-3-true")
    self.assertEqual(self.render("{{ .Values.s | quote }}", v), '"ab"')
    self.assertEqual(self.render('{{ "" | default "d" }}{{ "x" | default "d" }}', v), "dx")
    self.assertEqual(self.render("{{ toYaml .Values.m | nindent 2 }}", v), "\n  k: 1")
    self.assertEqual(self.render('{{ "a\\nb" | indent 2 }}', v), "  a\n  b")
    self.assertEqual(self.render('{{ index .Values.m "k" }}{{ eq .Values.n 3 }}{{ not .Values.t }}', v), "1truefalse")
    self.assertEqual(self.render('{{ define "x" }}<{{ .k }}>{{ end }}{{ include "x" .Values.m }}', v), "<1>")
    self.assertEqual(self.render('{{ "abcdef-" | trunc 6 | trimSuffix "-" }}', v), "abcdef")
    self.assertEqual(self.render('{{ "a" | sha256sum }}', v), hashlib.sha256(b"a").hexdigest())
    self.assertEqual(self.render("{{ add .Values.n 15 }}{{ 2 | add 1 }}", v), "183")
    self.assertEqual(self.render("{{ sub .Values.n 1 }}{{ lt .Values.n 3 }}{{ 4 | lt .Values.n }}", v), "2falsetrue")
    # Helm holds values.yaml numbers as float64: from a million up only int64 (or add/sub) prints digits.
    big = {"b": 1048576}
    self.assertEqual(self.render("{{ int64 .Values.b }} {{ add .Values.b 0 }}", big), "1048576 1048576")
    with self.assertRaisesRegex(gotemplate.TemplateError, "1.048576e"):
      self.render("{{ .Values.b }}", big)
    with self.assertRaisesRegex(gotemplate.TemplateError, "two integers"):
      self.render('{{ lt .Values.n "4" }}', v)
    with self.assertRaisesRegex(gotemplate.TemplateError, "integers"):
      self.render("{{ add .Values.s 1 }}", v)

  def test_strictness(self):
    with self.assertRaisesRegex(gotemplate.TemplateError, "no key 'missing'"):
      self.render("{{ .Values.missing }}", {})
    with self.assertRaisesRegex(gotemplate.TemplateError, "outside the subset"):
      self.render("{{ upper .Values.s }}", {"s": "a"})
    with self.assertRaisesRegex(gotemplate.TemplateError, "cannot print a map"):
      self.render("{{ .Values.m }}", {"m": {"a": 1}})
    with self.assertRaisesRegex(gotemplate.TemplateError, "float"):
      renderer().render(dict(defaults(), extra=0.5))


class ChartTest(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    cls.rendered, cls.values = render_all()

  def test_every_document_is_a_named_object(self):
    for name, objs in self.rendered.items():
      seen = set()
      for fn, o in objs:
        with self.subTest(values=name, file=fn):
          self.assertIsInstance(o, dict)
          self.assertIsInstance(o.get("apiVersion"), str)
          self.assertIsInstance(o.get("kind"), str)
          self.assertRegex(o["metadata"]["name"], r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
          key = (o["kind"], o["metadata"]["name"])
          self.assertNotIn(key, seen)
          seen.add(key)

  def test_exact_objects_per_value_set(self):
    base = {("ConfigMap", "tandem-flags"), ("Service", "tandem-router"), ("Service", "tandem-router-cluster"),
            ("Deployment", "tandem-router"),
            ("Service", "tandem-prefill"), ("StatefulSet", "tandem-prefill"), ("Service", "tandem-decode"),
            ("StatefulSet", "tandem-decode")}
    want = {
        "default": base, "init": base, "distinct": base, "insecure": base,
        "hostpath": base | {("PodMonitor", "tandem-metrics")},
        "gpu": base | {("ServiceMonitor", "tandem-metrics"), ("HorizontalPodAutoscaler", "tandem-prefill"),
                       ("HorizontalPodAutoscaler", "tandem-decode")},
    }
    for name, objs in self.rendered.items():
      self.assertEqual({(o["kind"], o["metadata"]["name"]) for _, o in objs}, want[name], name)

  def test_every_value_is_used(self):
    r = renderer()
    r.used.clear()
    for make in VALUE_SETS.values():
      r.render(make(), release=RELEASE)
    unused = [".".join(map(str, p)) for p in gotemplate.value_leaves(r.default_values)
              if not any(p[:len(u)] == u for u in r.used)]
    self.assertEqual(unused, [], "values no template uses")

  def test_flags_exist_and_every_flag_is_mapped(self):
    for name, objs in self.rendered.items():
      for w in workloads(objs):
        comp = component_of(w)
        (c,) = pod_spec(w)["containers"]
        binary, _, argv = container_argv(objs, w, c)
        with self.subTest(values=name, component=comp):
          self.assertEqual(binary, f"{self.values[name]['image']['binDir']}/{BINARIES[comp]}")
          flags = parse_flags(argv)
          known = flags_of(comp)
          self.assertEqual(sorted(set(flags) - known), [], f"flags {BINARIES[comp]} --help does not list")
          # Cluster TLS: the Secret's three files, or --insecure-cluster.
          other_mode = set(CLUSTER_TLS_FLAGS) - set(cluster_tls_flags(self.values[name]))
          self.assertEqual(sorted(other_mode & set(flags)), [], "both cluster TLS modes")
          self.assertEqual(sorted(known - set(flags) - set(NOT_MAPPED[comp]) - other_mode), [],
                           f"flags of {BINARIES[comp]} the chart does not set (map them or list them in NOT_MAPPED)")

  def test_each_value_reaches_exactly_its_flag(self):
    for name in ("default", "distinct", "insecure"):
      values, objs = self.values[name], self.rendered[name]
      for w in workloads(objs):
        comp = component_of(w)
        (c,) = pod_spec(w)["containers"]
        flags = parse_flags(container_argv(objs, w, c)[2])
        # Every number reaches its flag as an integer (the templates convert
        # with int64: Helm's float64 would print 2000001 as 2.000001e+06).
        expected = {f: str(v).lower() if isinstance(v, bool) else str(v)
                    for p, f in VALUE_TO_FLAG[comp].items() for v in [leaf(values, p)]}
        expected.update(cluster_tls_flags(values))
        if comp == "router":
          self.assertEqual(flags, expected, f"{name}/{comp}")
        else:
          expected["router"] = f"{RELEASE}-router-cluster:{values['router']['clusterPort']}"
          expected.update(PER_POD)
          self.assertEqual(flags, expected, f"{name}/{comp}")
    # distinct_values changed every mapped value, so with the equality above
    # no value is ignored and no flag takes another value's setting.
    for comp, mapping in VALUE_TO_FLAG.items():
      for p in mapping:
        self.assertNotEqual(leaf(self.values["distinct"], p), leaf(self.values["default"], p), p)

  def test_extra_args_are_appended(self):
    objs = self.rendered["gpu"]
    router = by_kind(objs, "Deployment")["tandem-router"]
    _, _, argv = container_argv(objs, router, pod_spec(router)["containers"][0])
    self.assertEqual(argv[-1], "--decode-workers=10.0.0.9:50053")

  def test_workers_find_the_router_and_advertise_the_pod(self):
    for name, objs in self.rendered.items():
      svc = by_kind(objs, "Service")["tandem-router-cluster"]
      (cluster_port,) = [p["port"] for p in svc["spec"]["ports"] if p["name"] == "cluster"]
      self.assertEqual(cluster_port, self.values[name]["router"]["clusterPort"])
      router = by_kind(objs, "Deployment")["tandem-router"]
      router_flags = parse_flags(container_argv(objs, router, pod_spec(router)["containers"][0])[2])
      self.assertEqual(router_flags["cluster-port"], str(cluster_port))
      for w in workloads(objs):
        if w["kind"] != "StatefulSet":
          continue
        (c,) = pod_spec(w)["containers"]
        flags = parse_flags(container_argv(objs, w, c)[2])
        # The router's cluster listener, not its public Service.
        self.assertEqual(flags["router"], f"tandem-router-cluster:{cluster_port}")
        env = {e["name"]: e for e in c["env"]}
        self.assertEqual(env["POD_IP"]["valueFrom"], {"fieldRef": {"fieldPath": "status.podIP"}})
        self.assertEqual(env["POD_NAME"]["valueFrom"], {"fieldRef": {"fieldPath": "metadata.name"}})
        self.assertEqual(env["UCX_TLS"]["value"], self.values[name]["ucx"]["tls"])
        devices = self.values[name]["ucx"]["netDevices"]
        if devices:
          self.assertEqual(env["UCX_NET_DEVICES"]["value"], devices)
        else:
          self.assertNotIn("UCX_NET_DEVICES", env)
        policy = self.values[name]["openmp"]["waitPolicy"]
        if policy:
          self.assertEqual(env["OMP_WAIT_POLICY"]["value"], policy)
        else:
          self.assertNotIn("OMP_WAIT_POLICY", env)

  def test_control_plane_is_internal(self):
    """The public Service carries the Generation API and metrics only; the
    registry's port is on the ClusterIP-only cluster Service, even when the
    public one is a LoadBalancer (the gpu value set)."""
    self.assertEqual(self.values["gpu"]["router"]["service"]["type"], "LoadBalancer")
    for name, objs in self.rendered.items():
      with self.subTest(values=name):
        svcs = by_kind(objs, "Service")
        public, cluster = svcs["tandem-router"], svcs["tandem-router-cluster"]
        self.assertEqual(public["spec"]["type"], self.values[name]["router"]["service"]["type"])
        self.assertEqual([(p["name"], p["targetPort"]) for p in public["spec"]["ports"]],
                         [("grpc", "grpc"), ("http", "http"), ("metrics", "metrics")])
        self.assertEqual(cluster["spec"]["type"], "ClusterIP")
        self.assertEqual([(p["name"], p["targetPort"], p["port"]) for p in cluster["spec"]["ports"]],
                         [("cluster", "cluster", self.values[name]["router"]["clusterPort"])])
        self.assertEqual(cluster["spec"]["selector"], public["spec"]["selector"])
        self.assertNotIn("annotations", cluster["metadata"])  # the public Service's (load balancer) annotations
        self.assertNotEqual(self.values[name]["router"]["clusterPort"], self.values[name]["router"]["port"])

  def test_pods_get_time_to_drain(self):
    # The kubelet's SIGKILL must come after the binary's own drain timeout.
    for name, objs in self.rendered.items():
      for w in workloads(objs):
        (c,) = pod_spec(w)["containers"]
        drain = int(parse_flags(container_argv(objs, w, c)[2])["drain-timeout-s"])
        with self.subTest(values=name, component=component_of(w)):
          self.assertEqual(pod_spec(w)["terminationGracePeriodSeconds"], drain + 15)

  def test_service_ports_match_container_ports(self):
    for name, objs in self.rendered.items():
      pods = [(w["spec"]["template"]["metadata"]["labels"], pod_spec(w)) for w in workloads(objs)]
      for svc in by_kind(objs, "Service").values():
        with self.subTest(values=name, service=svc["metadata"]["name"]):
          sel = svc["spec"]["selector"]
          matched = [spec for labels, spec in pods if sel.items() <= labels.items()]
          self.assertEqual(len(matched), 1, "a Service selects exactly one workload's pods")
          cports = {p["name"]: p for c in matched[0]["containers"] for p in c["ports"]}
          for p in svc["spec"]["ports"]:
            target = cports[p["targetPort"]]
            self.assertEqual(p["port"], target["containerPort"])
            self.assertEqual(p["protocol"], target["protocol"])

  def test_selectors_match_pod_labels_and_pods_roll_on_flag_changes(self):
    for name, objs in self.rendered.items():
      cm = by_kind(objs, "ConfigMap")["tandem-flags"]["data"]
      for w in workloads(objs):
        labels = w["spec"]["template"]["metadata"]["labels"]
        self.assertLessEqual(w["spec"]["selector"]["matchLabels"].items(), labels.items())
        comp = component_of(w)
        want = hashlib.sha256(cm[f"{comp}.flags"].rstrip("\n").encode()).hexdigest()
        self.assertEqual(w["spec"]["template"]["metadata"]["annotations"]["checksum/flags"], want)

  def test_gpus_tp_and_model_volume(self):
    objs = self.rendered["gpu"]
    for role in ("prefill", "decode"):
      w = by_kind(objs, "StatefulSet")[f"tandem-{role}"]
      spec = pod_spec(w)
      (c,) = spec["containers"]
      self.assertEqual(c["resources"]["limits"], {"memory": "4Gi", "nvidia.com/gpu": 2})
      self.assertEqual(c["resources"]["requests"], {"cpu": "2", "memory": "2Gi", "nvidia.com/gpu": 2})
      self.assertEqual(parse_flags(container_argv(objs, w, c)[2])["tp"], "2")
      self.assertEqual(spec["runtimeClassName"], "nvidia")
      self.assertNotIn("replicas", w["spec"])  # the HPA owns it
      self.assertEqual(spec["volumes"][1], {"name": "model", "persistentVolumeClaim": {
          "claimName": "tandem-models", "readOnly": True}})
      self.assertEqual(c["volumeMounts"][1], {"name": "model", "mountPath": "/models", "readOnly": True})
    for name in ("default", "distinct"):
      for w in workloads(self.rendered[name]):
        (c,) = pod_spec(w)["containers"]
        self.assertNotIn("nvidia.com/gpu", str(c["resources"]))
        self.assertEqual([v["name"] for v in pod_spec(w)["volumes"]], ["flags", "cluster-tls"])
    router = by_kind(self.rendered["hostpath"], "Deployment")["tandem-router"]
    self.assertEqual(pod_spec(router)["volumes"][1]["hostPath"], {"path": "/srv/models", "type": "Directory"})
    self.assertIsNone(pod_spec(router)["containers"][0]["resources"])  # empty requests and limits

  def test_init_container_fills_the_model_volume(self):
    for w in workloads(self.rendered["init"]):
      spec = pod_spec(w)
      (init,) = spec["initContainers"]
      self.assertEqual(init["command"], ["fetch-model", "--to", "/models/m"])
      self.assertEqual(init["volumeMounts"], [{"name": "model", "mountPath": "/models"}])
      self.assertEqual(spec["volumes"][1], {"name": "model", "emptyDir": {}})
    for w in workloads(self.rendered["default"]):
      self.assertNotIn("initContainers", pod_spec(w))

  def test_monitors_and_hpas_point_at_what_exists(self):
    pm = by_kind(self.rendered["hostpath"], "PodMonitor")["tandem-metrics"]
    self.assertEqual(pm["metadata"]["labels"]["team"], "serving")
    self.assertEqual(pm["spec"]["podMetricsEndpoints"], [{"port": "metrics", "path": "/metrics", "interval": "30s"}])
    pods = [w["spec"]["template"]["metadata"]["labels"] for w in workloads(self.rendered["hostpath"])]
    self.assertEqual(len([l for l in pods if pm["spec"]["selector"]["matchLabels"].items() <= l.items()]), 3)

    objs = self.rendered["gpu"]
    sm = by_kind(objs, "ServiceMonitor")["tandem-metrics"]
    sel = sm["spec"]["selector"]
    (expr,) = sel["matchExpressions"]
    self.assertEqual((expr["key"], expr["operator"]), ("app.kubernetes.io/component", "In"))
    svcs = [s for s in by_kind(objs, "Service").values()
            if sel["matchLabels"].items() <= s["metadata"]["labels"].items()
            and s["metadata"]["labels"][expr["key"]] in expr["values"]]
    self.assertEqual(sorted(s["metadata"]["name"] for s in svcs), ["tandem-decode", "tandem-prefill", "tandem-router"])
    for s in svcs:
      self.assertIn("metrics", [p["name"] for p in s["spec"]["ports"]])
    for role in ("prefill", "decode"):
      hpa = by_kind(objs, "HorizontalPodAutoscaler")[f"tandem-{role}"]
      self.assertEqual(hpa["spec"]["scaleTargetRef"], {"apiVersion": "apps/v1", "kind": "StatefulSet",
                                                       "name": f"tandem-{role}"})
      self.assertIn(f"tandem-{role}", by_kind(objs, "StatefulSet"))
      (metric,) = hpa["spec"]["metrics"]
      self.assertEqual(metric["object"]["metric"], {"name": "tandem_requests_queued"})
      self.assertEqual(metric["object"]["describedObject"]["name"], "tandem-router")
      self.assertEqual(metric["object"]["target"], {"type": "AverageValue", "averageValue": "4"})
      self.assertEqual((hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]), (2, 8))

  def test_invalid_values_fail_with_a_reason(self):
    cases = [
        (lambda v: v["metrics"]["podMonitor"].update(enabled=True) or
         v["metrics"]["serviceMonitor"].update(enabled=True), "enable one"),
        (lambda v: v["model"]["volume"].update(type="nfs"), 'model.volume.type "nfs"'),
        (lambda v: v["model"]["volume"].update(type="pvc"), "claimName is required"),
        (lambda v: v["model"]["init"].update(enabled=True, image="x"), "needs a model.volume.type"),
    ]
    for change, message in cases:
      v = defaults()
      change(v)
      with self.assertRaisesRegex(gotemplate.TemplateError, re.escape(message)):
        renderer().render(v)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--bin-dir", required=True, help="where tandem-router and the worker binaries are")
  args, rest = ap.parse_known_args()
  helm_chart_util.BIN_DIR = args.bin_dir
  unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
  main()
