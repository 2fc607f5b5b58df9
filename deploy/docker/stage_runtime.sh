#!/usr/bin/env bash
# Collects into DEST everything the runtime image needs from the build image,
# laid out as it goes into the image's root (the Dockerfiles'
# `COPY --from=build /stage/ /`):
#
#   DEST/opt/tandem/build/bin/      tandem, tandem-router, tandem-prefill-worker, tandem-decode-worker
#   DEST/opt/tandem/models/         the bundled model (the binaries find it
#                                   relative to themselves: bin/../../models)
#   DEST/usr/lib/<triplet>/...      every shared library they load, at the
#                                   path the build image has it, plus what
#                                   is loaded at run time: UCX's transport
#                                   modules and the verbs providers they use
#
#   deploy/docker/stage_runtime.sh BIN_DIR DEST
#
# Why a script and not a package list: the runtime image then holds exactly
# the libraries the binaries were linked against (no compilers, no headers),
# whatever install_deps.sh installed, and CI runs this same script
# (tests/deploy/runtime_stage_test.py) and starts the staged binaries in a
# chroot, so a library the image would lack fails a test, not a deployment.
#
# Left out, because the runtime base image provides them: the C library and
# the loader, libstdc++ and libgcc_s (every Debian/Ubuntu image has them),
# the CUDA runtime libraries under /usr/local/cuda (the nvidia/cuda runtime
# image, same CUDA version) and the driver's libcuda / libnvidia-* (mounted
# into the container by the NVIDIA container toolkit).
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 BIN_DIR DEST" >&2
  exit 2
fi
bin_dir=$1
dest=$2
root="$(cd "$(dirname "$0")/../.." && pwd)"
binaries=(tandem tandem-router tandem-prefill-worker tandem-decode-worker)

provided_by_base() {
  case "$(basename "$1")" in
    ld-linux*.so.* | libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.* | libresolv.so.* | \
      libutil.so.* | libstdc++.so.* | libgcc_s.so.* | libcuda.so.* | libnvidia-*) return 0 ;;
  esac
  case "$1" in
    /usr/local/cuda*) return 0 ;;
  esac
  return 1
}

# Copies one library under the name the loader asks for, into the real
# directory (/lib is a link to /usr/lib on merged-/usr systems: the image
# must get files under /usr/lib, not a /lib directory over that link).
copy_lib() {
  local path=$1
  local dir
  dir="$(readlink -f "$(dirname "$path")")"
  install -D -m 0644 "$(readlink -f "$path")" "$dest$dir/$(basename "$path")"
}

# Every library FILE loads (ldd's closure), except the base image's. A
# library the loader cannot find is an error: the image would not start.
copy_deps() {
  local file=$1 line name path
  while IFS= read -r line; do
    if [[ $line =~ ^[[:space:]]*([^[:space:]]+)[[:space:]]=\>[[:space:]]not[[:space:]]found ]]; then
      name=${BASH_REMATCH[1]}
      provided_by_base "$name" && continue
      echo "stage_runtime: $file needs $name, which is not installed" >&2
      exit 1
    fi
    if [[ $line =~ =\>[[:space:]](/[^[:space:]]+) ]]; then
      path=${BASH_REMATCH[1]}
    elif [[ $line =~ ^[[:space:]]*(/[^[:space:]]+) ]]; then
      path=${BASH_REMATCH[1]}
    else
      continue  # linux-vdso: in the kernel
    fi
    provided_by_base "$path" || copy_lib "$path"
  done < <(ldd "$file")
}

mkdir -p "$dest/opt/tandem/build/bin" "$dest/opt/tandem/models"
for b in "${binaries[@]}"; do
  install -m 0755 "$bin_dir/$b" "$dest/opt/tandem/build/bin/$b"
  copy_deps "$bin_dir/$b"
done
cp -R "$root/models/tandem-shakespeare" "$dest/opt/tandem/models/"

# UCX loads its transports (ib, rdmacm, cma) at run time from ucx/ beside
# libucs; those load the verbs providers named in /etc/libibverbs.d.
libucs="$(ldd "$bin_dir/tandem-decode-worker" | awk '$1 ~ /^libucs\.so/ {print $3}')"
if [[ -n $libucs ]]; then
  ucx_dir="$(readlink -f "$(dirname "$libucs")")/ucx"
  mkdir -p "$dest$ucx_dir"
  for m in "$ucx_dir"/lib*.so.*; do
    [[ -e $m ]] || continue
    copy_lib "$m"
    copy_deps "$m"
  done
  verbs_dir="$(dirname "$ucx_dir")/libibverbs"
  if [[ -d $verbs_dir && -d /etc/libibverbs.d ]]; then
    for p in "$verbs_dir"/*.so; do
      copy_lib "$p"
      copy_deps "$p"
    done
    mkdir -p "$dest/etc/libibverbs.d"
    cp /etc/libibverbs.d/*.driver "$dest/etc/libibverbs.d/"
  fi
fi
echo "stage_runtime: staged ${#binaries[@]} binaries, $(find "$dest" -name '*.so*' | wc -l) libraries into $dest"
