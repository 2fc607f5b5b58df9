"""The cluster test's shared state, one copy for every cluster_* module: the
parsed arguments (ARGS: bin_dir, source, work), the client package and the
worker API's stubs (tc, wpb2, wpb2_grpc, set by load_client() in main once
the stubs are generated), the PASS/FAIL report (check, log, PASSED, FAILED)
and the gRPC channel cache.

ARGS, tc, wpb2 and wpb2_grpc are rebound in main, so the other modules read
them as attributes of this module (`state.ARGS.work`, `state.tc.TandemClient`),
never as names copied at import time."""

import os
import subprocess
import sys
import threading

PASSED, FAILED = [], []
_print_lock = threading.Lock()
ARGS = None
tc = None          # tandem_client, imported by load_client()
wpb2 = None        # tandem.v1.worker_pb2
wpb2_grpc = None   # tandem.v1.worker_pb2_grpc


def check(name, cond, detail=""):
    (PASSED if cond else FAILED).append(name)
    with _print_lock:
        print(("PASS " if cond else "FAIL ") + name + ("" if cond else ": " + str(detail)[:2500]), flush=True)
    return cond


def log(msg):
    with _print_lock:
        print("  .. " + msg, flush=True)


def run(cmd, timeout=120, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return p.returncode, p.stdout, p.stderr


def load_client(stubs):
    """Imports the client package and generates the worker API's stubs.
    The client generates its stubs into `stubs`; the worker API's stubs go
    next to them (same tandem.v1 package). Raises when either fails."""
    global tc, wpb2, wpb2_grpc
    os.environ["TANDEM_CLIENT_STUBS"] = stubs
    sys.path.insert(0, os.path.join(ARGS.source, "clients", "python"))
    import tandem_client
    tc = tandem_client
    proto = os.path.join(ARGS.source, "proto")
    rc, out, err = run(["protoc", "-I", proto, "--python_out=" + stubs, "--grpc_out=" + stubs,
                        "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin",
                        os.path.join(proto, "tandem", "v1", "worker.proto")])
    if rc != 0:
        raise RuntimeError("protoc worker.proto: " + err)
    from tandem.v1 import worker_pb2, worker_pb2_grpc
    wpb2, wpb2_grpc = worker_pb2, worker_pb2_grpc


# ------------------------------------------------------------ gRPC channels

# mTLS inside the cluster: main makes one CA for the whole test with
# `tandem certs --dns tandem-test-peer`, so every role's certificate also
# names TEST_PEER and this process (holding the router's certificate) can
# dial any router cluster listener or worker with that one name.
CERTS = None        # the `tandem certs` directory, set by make_certs()
TEST_PEER = "tandem-test-peer"
_channels = {}


def make_certs(bin_dir, work):
    """Runs `tandem certs` into <work>/certs (once); raises when it fails."""
    global CERTS
    out = os.path.join(work, "certs")
    rc, _, err = run([os.path.join(bin_dir, "tandem"), "certs", "--out", out, "--dns", TEST_PEER, "--force"])
    if rc != 0:
        raise RuntimeError("tandem certs: " + err)
    CERTS = out


def tls_flags(role):
    """A binary's mTLS flags for `role` ('router', 'prefill-worker', 'decode-worker'), from CERTS."""
    return ["--tls-ca", os.path.join(CERTS, "ca.crt"), "--tls-cert", os.path.join(CERTS, role + ".crt"),
            "--tls-key", os.path.join(CERTS, role + ".key")]


def cluster_credentials(certs=None, role="router"):
    """grpc channel credentials from `certs` (default CERTS) with `role`'s certificate."""
    import grpc
    d = certs or CERTS

    def read(name):
        with open(os.path.join(d, name), "rb") as f:
            return f.read()
    return grpc.ssl_channel_credentials(root_certificates=read("ca.crt"), private_key=read(role + ".key"),
                                        certificate_chain=read(role + ".crt"))


def cluster_channel(addr, certs=None, role="router", peer=TEST_PEER):
    """A new (uncached) mTLS channel to a cluster listener or worker, as `role` from `certs`, expecting `peer`."""
    import grpc
    return grpc.secure_channel(addr, cluster_credentials(certs, role),
                               options=[("grpc.ssl_target_name_override", peer)])


def channel(addr):
    """The cached mTLS channel (the router's certificate) to a router's
    cluster listener or a worker."""
    if addr not in _channels:
        _channels[addr] = cluster_channel(addr)
    return _channels[addr]


def public_channel(addr):
    """The cached plaintext channel to a router's public port."""
    import grpc
    key = ("public", addr)
    if key not in _channels:
        _channels[key] = grpc.insecure_channel(addr)
    return _channels[key]


def close_channels():
    for ch in _channels.values():
        ch.close()
    _channels.clear()
