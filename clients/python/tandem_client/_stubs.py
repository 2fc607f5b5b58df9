"""Finds, or generates, the protobuf/gRPC stubs of Tandem's public API.

Generated code is never committed. The stubs come from the first of:

1. ``$TANDEM_CLIENT_STUBS``: a directory holding ``tandem/v1/generation_pb2.py``
   (e.g. written by ``generate_stubs.sh DIR``); generated into it when empty.
2. ``tandem_client/_gen``, written by ``generate_stubs.sh`` with no argument,
   if it was generated from the current proto (its PROTO_SHA256 stamp matches).
3. A per-user cache, ``${XDG_CACHE_HOME:-~/.cache}/tandem_client/<proto hash>``,
   generated on first import with ``protoc`` and ``grpc_python_plugin``.

The proto is looked up in ``$TANDEM_PROTO_DIR`` or in the source tree this
package sits in (``<repo>/proto``). Generation writes to a temporary folder
and renames it into place, so concurrent first imports are safe.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

_PROTO = os.path.join("tandem", "v1", "generation.proto")
_PB2 = os.path.join("tandem", "v1", "generation_pb2.py")
_STAMP = "PROTO_SHA256"
_HERE = os.path.dirname(os.path.abspath(__file__))


class StubError(ImportError):
    """The stubs are missing and could not be generated."""


def _proto_dir():
    d = os.environ.get("TANDEM_PROTO_DIR") or os.path.join(_HERE, "..", "..", "..", "proto")
    d = os.path.abspath(d)
    return d if os.path.isfile(os.path.join(d, _PROTO)) else None


def _proto_hash(proto_dir):
    with open(os.path.join(proto_dir, _PROTO), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _has_stubs(d):
    return os.path.isfile(os.path.join(d, _PB2))


def _stamp(d):
    try:
        with open(os.path.join(d, _STAMP)) as f:
            return f.read().strip()
    except OSError:
        return None


def generate(out_dir, proto_dir=None):
    """Runs protoc into ``out_dir`` (created; an existing stub tree is kept).

    Returns ``out_dir``. Raises StubError when protoc or the proto is missing.
    """
    proto_dir = proto_dir or _proto_dir()
    if proto_dir is None:
        raise StubError("tandem_client: generation.proto not found; set TANDEM_PROTO_DIR to the "
                        "repository's proto/ folder, or TANDEM_CLIENT_STUBS to pre-generated stubs")
    protoc = os.environ.get("PROTOC") or shutil.which("protoc")
    plugin = (os.environ.get("GRPC_PYTHON_PLUGIN") or shutil.which("grpc_python_plugin")
              or "/usr/bin/grpc_python_plugin")
    if protoc is None or not os.path.isfile(plugin):
        raise StubError("tandem_client: stubs missing and protoc/grpc_python_plugin not found "
                        "(Debian: apt install protobuf-compiler protobuf-compiler-grpc), or "
                        "point TANDEM_CLIENT_STUBS at stubs made by generate_stubs.sh")
    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".gen-", dir=out_dir)
    try:
        p = subprocess.run([protoc, "-I", proto_dir, "--python_out=" + tmp, "--grpc_out=" + tmp,
                            "--plugin=protoc-gen-grpc=" + plugin, os.path.join(proto_dir, _PROTO)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise StubError("tandem_client: protoc failed: " + p.stderr.strip())
        # Regular packages, so no other "tandem" on sys.path shadows them.
        for pkg in ("tandem", os.path.join("tandem", "v1")):
            open(os.path.join(tmp, pkg, "__init__.py"), "a").close()
        with open(os.path.join(tmp, _STAMP), "w") as f:
            f.write(_proto_hash(proto_dir) + "\n")
        if not _has_stubs(out_dir):
            try:
                os.rename(os.path.join(tmp, "tandem"), os.path.join(out_dir, "tandem"))
                os.replace(os.path.join(tmp, _STAMP), os.path.join(out_dir, _STAMP))
            except OSError:
                if not _has_stubs(out_dir):  # not just another process winning the race
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def stub_dir():
    """Returns a directory holding the stubs, generating them if needed."""
    env = os.environ.get("TANDEM_CLIENT_STUBS")
    if env:
        return env if _has_stubs(env) else generate(env)
    proto_dir = _proto_dir()
    digest = _proto_hash(proto_dir) if proto_dir else None
    local = os.path.join(_HERE, "_gen")
    if _has_stubs(local) and (digest is None or _stamp(local) == digest):
        return local
    if digest is None:
        raise StubError("tandem_client: no stubs and no generation.proto to make them from; set "
                        "TANDEM_PROTO_DIR or TANDEM_CLIENT_STUBS (see clients/python/README.md)")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    d = os.path.join(cache, "tandem_client", digest[:16])
    return d if _has_stubs(d) else generate(d, proto_dir)


def load():
    """Imports and returns (generation_pb2, generation_pb2_grpc)."""
    d = stub_dir()
    if d not in sys.path:
        sys.path.insert(0, d)
    from tandem.v1 import generation_pb2, generation_pb2_grpc  # noqa: E402
    return generation_pb2, generation_pb2_grpc
