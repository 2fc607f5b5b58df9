"""What the chart's tests share (helm_chart_test.py, helm_chart_tls_test.py):
the value sets the chart is rendered under, the renderer (gotemplate.py),
and readers of the rendered objects (a container's argv from the flags
ConfigMap, a binary's --help flags).
"""

import copy
import os
import re
import shlex
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gotemplate  # noqa: E402

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy", "helm", "tandem")
BIN_DIR = None  # set from --bin-dir
RELEASE = "tandem"
BINARIES = {"router": "tandem-router", "prefill": "tandem-prefill-worker", "decode": "tandem-decode-worker"}
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
# Where every pod mounts its role's cluster TLS Secret, and the role each
# component's certificate names.
CLUSTER_TLS_DIR = "/etc/tandem-cluster-tls"
ROLES = {"router": "tandem-router", "prefill": "tandem-prefill-worker", "decode": "tandem-decode-worker"}

# Per-pod flags, set from the downward API in the container command.
PER_POD = {"host": "$POD_IP", "worker-id": "$POD_NAME"}
# The cluster TLS flags: the three files of the mounted Secret, or
# --insecure-cluster (clusterTls.enabled picks one set; neither is a value).
CLUSTER_TLS_FLAGS = ("tls-ca", "tls-cert", "tls-key", "insecure-cluster")


def cluster_tls_flags(values):
  if not values["clusterTls"]["enabled"]:
    return {"insecure-cluster": "true"}
  return {"tls-ca": f"{CLUSTER_TLS_DIR}/ca.crt", "tls-cert": f"{CLUSTER_TLS_DIR}/tls.crt",
          "tls-key": f"{CLUSTER_TLS_DIR}/tls.key"}


# Each value that configures a binary, and the one flag it becomes.
ENGINE = {
    "maxNumBatchedTokens": "max-num-batched-tokens", "maxNumSeqs": "max-num-seqs",
    "kvCacheMemoryMib": "kv-cache-memory", "numKvBlocks": "num-kv-blocks",
    "noPrefixCaching": "no-prefix-caching", "noChunkedPrefill": "no-chunked-prefill",
    "batching": "batching", "schedulingPolicy": "scheduling-policy", "batchSize": "batch-size",
    "maxBatchDelayMs": "max-batch-delay-ms",
}


def value_to_flag():
  m = {
      "router": {
          ("model", "path"): "model", ("router", "host"): "host", ("router", "port"): "port",
          ("router", "clusterPort"): "cluster-port", ("router", "httpPort"): "http-port",
          ("router", "maxQueued"): "max-queued", ("router", "prefillTimeoutMs"): "prefill-timeout-ms",
          ("router", "maxPrefillTokensPerWorker"): "max-prefill-tokens-per-worker",
          ("router", "maxQueuedTokens"): "max-queued-tokens",
          ("router", "leaseRenewMs"): "lease-renew-ms", ("router", "maxMigrations"): "max-migrations",
          ("router", "migrationPatienceMs"): "migration-patience-ms",
          ("router", "decodeIdleTimeoutMs"): "decode-idle-timeout-ms",
          ("router", "drainTimeoutS"): "drain-timeout-s", ("metrics", "port"): "metrics-port",
          ("router", "routing"): "routing", ("router", "prefixIndexBlocks"): "prefix-index-blocks",
          ("router", "apiKeys", "maxStreamsPerKey"): "max-streams-per-key",
          ("router", "apiKeys", "tokensPerMinutePerKey"): "tokens-per-minute-per-key",
      },
  }
  for role in ("prefill", "decode"):
    w = {
        ("model", "path"): "model", (role, "port"): "port", ("kv", "transport"): "kv-transport",
        ("kv", "blockSize"): "block-size", ("kv", "cacheDtype"): "kv-cache-dtype", (role, "tp"): "tp",
        ("model", "dtype"): "dtype", ("model", "quantization"): "quantization",
        (role, "drainTimeoutS"): "drain-timeout-s",
        ("metrics", "port"): "metrics-port",
    }
    w.update({(role, "engine", k): f for k, f in ENGINE.items()})
    if role == "prefill":
      w.update({(role, "kvFlushTimeoutMs"): "kv-flush-timeout-ms", (role, "kvSenderThreads"): "kv-sender-threads"})
    else:
      w.update({(role, "reservationTimeoutMs"): "reservation-timeout-ms", (role, "releaseGraceMs"): "release-grace-ms"})
    m[role] = w
  return m


VALUE_TO_FLAG = value_to_flag()


# ------------------------------------------------------------- value sets ---

def defaults():
  return copy.deepcopy(renderer().default_values)


def gpu_values():
  """CUDA image, tp 2 with 2 GPUs a pod, model on a PVC, ServiceMonitor, HPAs, every Secret (custom names)."""
  v = defaults()
  v["image"]["tag"] = "0.1.0-cuda"
  v["imagePullSecrets"] = [{"name": "regcred"}]
  v["runtimeClassName"] = "nvidia"
  v["model"]["path"] = "/models/qwen2-0.5b"
  v["model"]["volume"].update(type="pvc", claimName="tandem-models")
  v["ucx"].update(tls="rc,ud", netDevices="mlx5_0:1")
  v["openmp"]["waitPolicy"] = ""  # dedicated GPU nodes: leave OpenMP at its default
  v["metrics"]["serviceMonitor"].update(enabled=True, labels={"release": "prometheus"})
  v["router"]["service"].update(type="LoadBalancer", annotations={"example.com/lb": "internal"})
  v["router"]["extraArgs"] = ["--decode-workers=10.0.0.9:50053"]
  v["router"]["apiKeys"].update(secretName="tandem-api-keys", secretKey="api-keys.txt")
  v["router"]["publicTls"]["secretName"] = "tandem-public-tls"
  v["clusterTls"]["secretNames"] = {"router": "r-mtls", "prefill": "p-mtls", "decode": "d-mtls"}
  for c in ("router", "prefill", "decode"):
    v[c]["nodeSelector"] = {"example.com/pool": c}
    v[c]["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    v[c]["affinity"] = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                          "labelSelector": {"matchLabels": {"app.kubernetes.io/component": c}}}}]}}
    v[c]["podAnnotations"] = {"example.com/owner": "serving"}
    v[c]["env"] = [{"name": "OMP_NUM_THREADS", "value": "4"}]
  for role in ("prefill", "decode"):
    v[role].update(tp=2, gpus=2)
    v[role]["autoscaling"].update(enabled=True, minReplicas=2, maxReplicas=8, queuedPerReplica=4)
  return v


def hostpath_values():
  v = defaults()
  v["model"]["path"] = "/srv/models/llama"
  v["model"]["volume"].update(type="hostPath", hostPath="/srv/models", mountPath="/srv/models")
  v["metrics"]["podMonitor"].update(enabled=True, interval="30s", labels={"team": "serving"})
  v["router"]["resources"] = {"requests": {}, "limits": {}}
  return v


def init_values():
  v = defaults()
  v["model"]["path"] = "/models/m"
  v["model"]["volume"]["type"] = "emptyDir"
  v["model"]["init"].update(enabled=True, image="example.com/fetch:1",
                            command=["fetch-model", "--to", "/models/m"])
  return v


def distinct_values():
  """Every value that maps to a flag set to a non-default value of its own."""
  v = defaults()
  strings = {("model", "path"): "/models/x", ("router", "host"): "10.9.8.7", ("kv", "transport"): "loopback",
             ("kv", "cacheDtype"): "bf16", ("model", "dtype"): "bfloat16",
             ("model", "quantization"): "int8", ("prefill", "engine", "batching"): "dynamic",
             ("decode", "engine", "batching"): "static", ("prefill", "engine", "schedulingPolicy"): "priority",
             ("decode", "engine", "schedulingPolicy"): "priority", ("router", "routing"): "round-robin"}
  n = 1000
  for comp in VALUE_TO_FLAG.values():
    for path in comp:
      node = v
      for k in path[:-1]:
        node = node[k]
      old = node[path[-1]]
      if isinstance(old, bool):
        node[path[-1]] = not old
      elif isinstance(old, int):
        # Distinct from every default and from each other; past 1,000,000
        # (where Helm's float64 would print an exponent) except for ports.
        node[path[-1]] = (40000 if path[-1].lower().endswith("port") else 2000000) + n
        n += 1
      else:
        node[path[-1]] = strings[path]
  return v


def insecure_values():
  """clusterTls off (a private test cluster): --insecure-cluster, grpc: probes."""
  v = defaults()
  v["clusterTls"]["enabled"] = False
  return v


VALUE_SETS = {"default": defaults, "gpu": gpu_values, "hostpath": hostpath_values, "init": init_values,
              "distinct": distinct_values, "insecure": insecure_values}


def render_all():
  """Every value set rendered: ({name: objects}, {name: values})."""
  return ({name: render_objects(make()) for name, make in VALUE_SETS.items()},
          {name: make() for name, make in VALUE_SETS.items()})


# ---------------------------------------------------------------- helpers ---

_RENDERER = None


def renderer():
  global _RENDERER
  if _RENDERER is None:
    _RENDERER = gotemplate.Renderer(CHART)
  return _RENDERER


class StrictLoader(yaml.SafeLoader):
  """SafeLoader that refuses duplicate keys (PyYAML keeps the last silently;
  Kubernetes' decoder refuses them)."""


def _no_dup_mapping(loader, node, deep=False):
  keys = set()
  for k, _ in node.value:
    key = loader.construct_object(k, deep=deep)
    if key in keys:
      raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", k.start_mark)
    keys.add(key)
  return loader.construct_mapping(node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_dup_mapping)


def render_objects(values):
  out = renderer().render(values, release=RELEASE)
  objs = []
  for fn, text in out.items():
    for doc in yaml.load_all(text, Loader=StrictLoader):
      if doc is not None:
        objs.append((fn, doc))
  return objs


def by_kind(objs, kind):
  return {o["metadata"]["name"]: o for _, o in objs if o["kind"] == kind}


def help_flags(binary, *command):
  """The flags `binary [command...] --help` lists."""
  out = subprocess.run([os.path.join(BIN_DIR, binary), *command, "--help"], capture_output=True, text=True,
                       timeout=30)
  assert out.returncode == 0, f"{binary} {' '.join(command)} --help exited {out.returncode}: {out.stderr}"
  return set(re.findall(r"^  --([a-z0-9-]+)  ", out.stdout, re.M))


_HELP = {}


def flags_of(component):
  if component not in _HELP:
    _HELP[component] = help_flags(BINARIES[component])
  return _HELP[component]


def pod_spec(workload):
  return workload["spec"]["template"]["spec"]


def container_argv(objs, workload, container):
  """The argv the container's shell runs: the binary, the ConfigMap's flags,
  then the per-pod flags (left as the shell variables they name)."""
  assert container["command"] == ["/bin/sh", "-c"], container["command"]
  (script,) = container["args"]
  m = re.fullmatch(r"set -f; exec (\S+) \$\(cat (/etc/tandem/[a-z.]+)\)(.*)", script)
  assert m, f"unexpected container script {script!r}"
  binary, path, rest = m.group(1), m.group(2), m.group(3)
  mounts = {vm["mountPath"]: vm["name"] for vm in container["volumeMounts"]}
  vol_name = mounts[os.path.dirname(path)]
  vols = {v["name"]: v for v in pod_spec(workload)["volumes"]}
  cm_name = vols[vol_name]["configMap"]["name"]
  data = by_kind(objs, "ConfigMap")[cm_name]["data"][os.path.basename(path)]
  lines = data.splitlines()
  for line in lines:
    assert line and not re.search(r"\s", line), f"flag line {line!r} would be split or dropped by the shell"
  return binary, data, lines + shlex.split(rest)


def parse_flags(argv):
  flags = {}
  for a in argv:
    m = re.fullmatch(r"--([a-z0-9-]+)=(.*)", a)
    assert m, f"argument {a!r} is not --flag=value"
    assert m.group(1) not in flags, f"--{m.group(1)} passed twice"
    flags[m.group(1)] = m.group(2)
  return flags


def component_of(workload):
  return workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]


def workloads(objs):
  return [o for _, o in objs if o["kind"] in WORKLOAD_KINDS]


def leaf(values, path):
  for k in path:
    values = values[k]
  return values
