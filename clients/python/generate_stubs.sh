#!/bin/sh
# Generates the Python protobuf/gRPC stubs of Tandem's public API.
#
#   clients/python/generate_stubs.sh [OUT_DIR]
#
# OUT_DIR defaults to clients/python/tandem_client/_gen (git-ignored). The
# client package does the same on first import when it finds no stubs (see
# README.md), so running this by hand is only needed to pre-generate them,
# e.g. for a machine without protoc: copy OUT_DIR there and point
# TANDEM_CLIENT_STUBS at it.
#
# Needs protoc and the gRPC Python plugin (Debian: protobuf-compiler,
# protobuf-compiler-grpc). PROTOC and GRPC_PYTHON_PLUGIN override their paths.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$here/tandem_client/_gen}
proto_dir=${TANDEM_PROTO_DIR:-$root/proto}
protoc=${PROTOC:-protoc}
plugin=${GRPC_PYTHON_PLUGIN:-$(command -v grpc_python_plugin || echo /usr/bin/grpc_python_plugin)}

mkdir -p "$out"
"$protoc" -I "$proto_dir" --python_out="$out" --grpc_out="$out" \
  --plugin=protoc-gen-grpc="$plugin" "$proto_dir/tandem/v1/generation.proto"
# Regular packages (not namespace ones), so another "tandem" on sys.path
# cannot shadow them.
touch "$out/tandem/__init__.py" "$out/tandem/v1/__init__.py"
# The client uses tandem_client/_gen only while this matches the proto.
sha256sum "$proto_dir/tandem/v1/generation.proto" | cut -c1-64 > "$out/PROTO_SHA256"
echo "stubs written to $out"
