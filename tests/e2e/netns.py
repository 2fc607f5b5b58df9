"""Linux network namespaces as "hosts" for the multi-host and chaos tests:
each host is a namespace with one address on a bridge (in a hub namespace),
as machines on one LAN, and processes run inside them by `ip netns exec`
(which execs: the PID is the program's own, so tests signal it directly).

Both ends of every veth pair are created inside the namespaces, so nothing
is added to the host's own network and no server listens on its interfaces.
Namespace names are machine-wide (/run/netns): callers pass a prefix unique
per run (pid + random), so concurrent runs never meet, and the address plan
is private to each run's bridge.

Also: link cuts between two hosts (a `prohibit` route each way, so only that
pair loses its path while both keep reaching everyone else)."""

import os
import shutil
import subprocess
import sys

from e2e_util import Proc

IFACE = "tdm0"


def run(cmd, timeout=120, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return p.returncode, p.stdout, p.stderr


def clean_env():
    """The environment for every process in a namespace: no proxy (gRPC
    would send the namespace addresses to it), UCX over TCP on the host's
    one device."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["UCX_TLS"] = "tcp,self"
    env["UCX_NET_DEVICES"] = IFACE
    env["UCX_WARN_UNUSED_ENV_VARS"] = "n"
    return env


class Network:
    """A hub namespace with bridge br0 and one namespace per host of
    `hosts` ([(name, ipv4)], all in one /24), each joined to the bridge by
    a veth pair whose host end is IFACE."""

    def __init__(self, prefix, hosts):
        self.prefix = prefix
        self.hosts = list(hosts)
        self.addr = dict(self.hosts)
        self.hub = prefix + "-hub"
        self.ns = {name: "%s-%s" % (prefix, name) for name, _ in self.hosts}
        self.made = []  # namespaces created so far (deleted in teardown)

    def ip(self, *args):
        rc, out, err = run(["ip"] + list(args), timeout=30)
        if rc != 0:
            raise RuntimeError("ip %s: %s" % (" ".join(args), err.strip()))
        return out

    def add_namespace(self, name):
        self.ip("netns", "add", name)
        self.made.append(name)
        self.ip("-n", name, "link", "set", "lo", "up")

    def setup(self):
        self.add_namespace(self.hub)
        self.ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        self.ip("-n", self.hub, "link", "set", "br0", "up")
        for i, (name, addr) in enumerate(self.hosts):
            ns, port = self.ns[name], "port%d" % i
            self.add_namespace(ns)
            # Both ends are created directly in their namespaces: no name is
            # ever taken on the host, so parallel runs cannot collide.
            self.ip("link", "add", IFACE, "netns", ns, "type", "veth", "peer", "name", port, "netns", self.hub)
            self.ip("-n", self.hub, "link", "set", port, "master", "br0")
            self.ip("-n", self.hub, "link", "set", port, "up")
            self.ip("-n", ns, "addr", "add", addr + "/24", "dev", IFACE)
            self.ip("-n", ns, "link", "set", IFACE, "up")

    def addresses(self, name):
        """The IPv4 addresses in a host namespace, as 'dev addr/len'."""
        out = self.ip("-n", self.ns[name], "-4", "-o", "addr", "show")
        return sorted("%s %s" % (f[1], f[3]) for f in (line.split() for line in out.splitlines()))

    def cut(self, a, b):
        """Hosts a and b lose their path to each other (each gets a
        `prohibit` route to the other: sends fail at once, nothing arrives);
        both still reach every other host."""
        self.ip("-n", self.ns[a], "route", "add", "prohibit", self.addr[b] + "/32")
        self.ip("-n", self.ns[b], "route", "add", "prohibit", self.addr[a] + "/32")

    def heal(self, a, b):
        """Undoes cut(a, b)."""
        for x, y in ((a, b), (b, a)):
            run(["ip", "-n", self.ns[x], "route", "del", "prohibit", self.addr[y] + "/32"], timeout=30)

    def teardown(self):
        left = []
        for name in reversed(self.made):
            rc, _, err = run(["ip", "netns", "del", name], timeout=30)
            if rc != 0:
                left.append("%s: %s" % (name, err.strip()))
        self.made = []
        return left

    def listed(self):
        """Our namespaces that `ip netns list` still shows."""
        rc, out, _ = run(["ip", "netns", "list"], timeout=30)
        names = {line.split()[0] for line in out.splitlines() if line.strip()}
        return sorted(n for n in [self.hub] + list(self.ns.values()) if n in names)


def can_make_namespaces(prefix):
    """None when this machine lets us create a namespace, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = prefix + "-probe"
    rc, _, err = run(["ip", "netns", "add", probe], timeout=30)
    if rc != 0:
        return "`ip netns add` failed: " + err.strip()
    run(["ip", "netns", "del", probe], timeout=30)
    return None


class NsProc(Proc):
    """A process in a namespace (`ip netns exec` execs it: same PID), stdout
    lines queued, stderr to <work>/<name>.log."""

    def __init__(self, name, ns, cmd, work, env):
        super().__init__(name, ["ip", "netns", "exec", ns] + cmd, os.path.join(work, name + ".log"), env=env)


def netns_inode(pid):
    try:
        return os.stat("/proc/%d/ns/net" % pid).st_ino
    except OSError:
        return None


def generate_stubs(source, work):
    """Generation stubs (via the client package) and the worker API's stubs
    into <work>/stubs, for clients that run inside a namespace; returns the
    directory."""
    stubs = os.path.join(work, "stubs")
    os.environ["TANDEM_CLIENT_STUBS"] = stubs
    sys.path.insert(0, os.path.join(source, "clients", "python"))
    import tandem_client  # noqa: F401  (generates the tandem.v1 generation stubs)
    proto = os.path.join(source, "proto")
    rc, _, err = run(["protoc", "-I", proto, "--python_out=" + stubs, "--grpc_out=" + stubs,
                      "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin",
                      os.path.join(proto, "tandem", "v1", "worker.proto")])
    if rc != 0:
        raise RuntimeError("protoc worker.proto: " + err)
    return stubs
