"""Minimal, dependency-free (json + struct + numpy) safetensors reader/writer.

File layout (https://github.com/huggingface/safetensors):
    8 bytes   little-endian uint64 N = length of the JSON header
    N bytes   UTF-8 JSON header, padded with spaces (we pad to a multiple of 8)
    rest      the byte buffer; every tensor is a contiguous little-endian,
              row-major slice [data_offsets[0], data_offsets[1]) of it

Header: {"__metadata__": {str: str}, "<name>": {"dtype": "F32", "shape": [...],
"data_offsets": [begin, end]}, ...}

BF16 has no numpy dtype.  In this module a BF16 tensor is carried as a numpy
uint16 array holding the raw bit patterns (the upper 16 bits of a float32);
use `bf16_bits_to_float32` / `float_to_bf16_bits` to convert.

In-memory representation used by the readers and the writers:
    a "stored tensor" is a pair (dtype_string, numpy_array) where numpy_array
    has the numpy dtype given in _NUMPY_DTYPES (uint16 bits for BF16).
The writers also accept a plain numpy array (dtype inferred from the numpy
dtype) or a torch tensor (converted through numpy; torch.bfloat16 handled).

Sharded checkpoints: model-00001-of-0000K.safetensors ... plus
model.safetensors.index.json = {"metadata": {"total_size": bytes},
"weight_map": {tensor_name: shard_file_name}}.
"""

import json
import os
import struct

import numpy as np

# safetensors dtype string -> numpy dtype of the in-memory array
_NUMPY_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # raw bits
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
    "F8_E4M3": np.dtype("u1"),  # raw codes
}

# numpy dtype -> safetensors dtype string (for plain arrays given to writers;
# uint16 is deliberately absent: a BF16 tensor must be passed as ("BF16", bits))
_DTYPE_FROM_NUMPY = {
    np.dtype("float64"): "F64",
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
    np.dtype("int16"): "I16",
    np.dtype("int8"): "I8",
    np.dtype("uint8"): "U8",
    np.dtype("bool"): "BOOL",
}

SINGLE_FILE_NAME = "model.safetensors"
INDEX_FILE_NAME = "model.safetensors.index.json"


# --------------------------------------------------------------------------
# BF16 / F16 conversions
# --------------------------------------------------------------------------

def float_to_bf16_bits(values):
    """float array -> uint16 BF16 bit patterns, round-to-nearest-even.

    The value is first converted to float32 (exactly, for float32/float16
    inputs).  NaN maps to a quiet NaN with the sign preserved."""
    f32 = np.asarray(np.asarray(values, dtype=np.float32), order="C")
    u = f32.view(np.uint32).astype(np.uint64)
    rounding_bias = ((u >> np.uint64(16)) & np.uint64(1)) + np.uint64(0x7FFF)
    bits = ((u + rounding_bias) >> np.uint64(16)).astype(np.uint16)
    nan = np.isnan(f32)
    if nan.any():
        sign = ((u >> np.uint64(16)) & np.uint64(0x8000)).astype(np.uint16)
        bits = np.where(nan, sign | np.uint16(0x7FC0), bits).astype(np.uint16)
    return bits


def bf16_bits_to_float32(bits):
    """uint16 BF16 bit patterns -> float32 (exact)."""
    b = np.asarray(np.asarray(bits, dtype=np.uint16), order="C")
    return (b.astype(np.uint32) << np.uint32(16)).view(np.float32)


def to_float64(dtype, array):
    """A stored tensor (dtype string, numpy array) -> float64 numpy array,
    exactly (every F32/F16/BF16 value is representable in float64)."""
    if dtype == "BF16":
        return bf16_bits_to_float32(array).astype(np.float64)
    if dtype in ("F64", "F32", "F16"):
        return np.asarray(array).astype(np.float64)
    raise ValueError("to_float64: not a floating dtype: %s" % dtype)


def encode(values, dtype):
    """float array (numpy or torch) -> stored tensor (dtype, numpy array) in the
    requested safetensors float dtype ("F64", "F32", "F16" or "BF16")."""
    arr = _as_numpy(values)
    if dtype == "BF16":
        return ("BF16", float_to_bf16_bits(arr))
    if dtype in ("F64", "F32", "F16"):
        return (dtype, np.asarray(arr.astype(_NUMPY_DTYPES[dtype]), order="C"))
    raise ValueError("encode: unsupported dtype %s" % dtype)


def _as_numpy(value):
    if isinstance(value, np.ndarray):
        return value
    try:  # torch tensor?
        import torch

        if isinstance(value, torch.Tensor):
            t = value.detach().cpu()
            if t.dtype == torch.bfloat16:
                t = t.to(torch.float32)
            return t.numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(value)


def _normalize(value):
    """writer input -> stored tensor (dtype, contiguous numpy array)."""
    if isinstance(value, tuple):
        dtype, arr = value
        if dtype not in _NUMPY_DTYPES:
            raise ValueError("unsupported safetensors dtype %r" % (dtype,))
        arr = np.asarray(np.asarray(arr).astype(_NUMPY_DTYPES[dtype]), order="C")
        return dtype, arr
    try:
        import torch

        if isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16:
            t = value.detach().cpu().to(torch.float32).numpy()
            return "BF16", float_to_bf16_bits(t)
    except ImportError:  # pragma: no cover
        pass
    arr = _as_numpy(value)
    dtype = _DTYPE_FROM_NUMPY.get(arr.dtype)
    if dtype is None:
        raise ValueError("cannot infer safetensors dtype for numpy dtype %s "
                         "(pass (\"BF16\", uint16_bits) for BF16)" % arr.dtype)
    return dtype, np.asarray(arr.astype(_NUMPY_DTYPES[dtype]), order="C")


# --------------------------------------------------------------------------
# single file
# --------------------------------------------------------------------------

def save_file(tensors, path, metadata=None):
    """Write one .safetensors file.

    tensors: {name: stored tensor (dtype, array) | numpy array | torch tensor}
    metadata: optional {str: str}; {"format": "pt"} is always included.
    Tensors are laid out in sorted-name order. Returns the buffer size."""
    meta = {"format": "pt"}
    if metadata:
        meta.update({str(k): str(v) for k, v in metadata.items()})
    header = {"__metadata__": meta}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        dtype, arr = _normalize(tensors[name])
        data = arr.tobytes(order="C")
        header[name] = {
            "dtype": dtype,
            "shape": [int(s) for s in arr.shape],
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * ((8 - len(header_bytes) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for data in blobs:
            f.write(data)
    os.replace(tmp, path)
    return offset


def read_header(path):
    """-> (header dict without __metadata__, metadata dict, data start offset)"""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("%s: truncated safetensors file" % path)
        (n,) = struct.unpack("<Q", raw)
        if n > 100 * 1024 * 1024:
            raise ValueError("%s: implausible header length %d" % (path, n))
        header = json.loads(f.read(n).decode("utf-8"))
    metadata = header.pop("__metadata__", {}) or {}
    return header, metadata, 8 + n


def load_file(path):
    """Read one .safetensors file -> ({name: (dtype, numpy array)}, metadata).

    BF16 arrays are uint16 bit patterns (see bf16_bits_to_float32)."""
    header, metadata, start = read_header(path)
    with open(path, "rb") as f:
        f.seek(start)
        buf = f.read()
    out = {}
    spans = []
    for name, info in header.items():
        dtype = info["dtype"]
        if dtype not in _NUMPY_DTYPES:
            raise ValueError("%s: tensor %s has unsupported dtype %s"
                             % (path, name, dtype))
        np_dtype = _NUMPY_DTYPES[dtype]
        shape = tuple(int(s) for s in info["shape"])
        begin, end = (int(x) for x in info["data_offsets"])
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if end - begin != count * np_dtype.itemsize or end > len(buf) or begin < 0:
            raise ValueError("%s: tensor %s has inconsistent offsets %s for "
                             "shape %s dtype %s" % (path, name, (begin, end),
                                                    shape, dtype))
        arr = np.frombuffer(buf, dtype=np_dtype, count=count, offset=begin)
        out[name] = (dtype, arr.reshape(shape).copy())
        spans.append((begin, end))
    # the spec requires the buffer to be fully covered without overlaps
    spans.sort()
    pos = 0
    for begin, end in spans:
        if begin != pos:
            raise ValueError("%s: hole or overlap in the data buffer at %d"
                             % (path, pos))
        pos = end
    if pos != len(buf):
        raise ValueError("%s: %d trailing bytes after the last tensor"
                         % (path, len(buf) - pos))
    return out, metadata


# --------------------------------------------------------------------------
# model directories (single file or sharded)
# --------------------------------------------------------------------------

def save_sharded(tensors, directory, num_shards, metadata=None):
    """Split tensors over num_shards files (sorted names, contiguous groups
    balanced by byte size) and write model.safetensors.index.json.
    Returns the index dict."""
    names = sorted(tensors)
    if num_shards < 1 or num_shards > len(names):
        raise ValueError("num_shards must be in [1, %d]" % len(names))
    normalized = {n: _normalize(tensors[n]) for n in names}
    sizes = [normalized[n][1].nbytes for n in names]
    total = sum(sizes)
    groups = [[] for _ in range(num_shards)]
    acc = 0
    for name, size in zip(names, sizes):
        # shard index by the byte position of the tensor's midpoint
        k = min(num_shards - 1, int((acc + size / 2.0) * num_shards / max(total, 1)))
        groups[k].append(name)
        acc += size
    # make sure no shard is empty (move tensors from neighbours if needed)
    for k in range(num_shards):
        if not groups[k]:
            donor = max(range(num_shards), key=lambda j: len(groups[j]))
            if donor < k:
                groups[k].insert(0, groups[donor].pop())
            else:
                groups[k].append(groups[donor].pop(0))
    weight_map = {}
    for k, group in enumerate(groups):
        fname = "model-%05d-of-%05d.safetensors" % (k + 1, num_shards)
        save_file({n: normalized[n] for n in group},
                  os.path.join(directory, fname), metadata)
        for n in group:
            weight_map[n] = fname
    index = {"metadata": {"total_size": total},
             "weight_map": {n: weight_map[n] for n in sorted(weight_map)}}
    with open(os.path.join(directory, INDEX_FILE_NAME), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    return index


def save_model_dir(tensors, directory, num_shards=1, metadata=None):
    """Write model.safetensors (num_shards == 1) or shards + index."""
    os.makedirs(directory, exist_ok=True)
    if num_shards == 1:
        save_file(tensors, os.path.join(directory, SINGLE_FILE_NAME), metadata)
    else:
        save_sharded(tensors, directory, num_shards, metadata)


def load_model_dir(directory):
    """Read all tensors of a HF model directory: model.safetensors.index.json
    (sharded) if present, else model.safetensors.
    -> {name: (dtype, numpy array)}"""
    index_path = os.path.join(directory, INDEX_FILE_NAME)
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
        weight_map = index["weight_map"]
        out = {}
        for fname in sorted(set(weight_map.values())):
            tensors, _ = load_file(os.path.join(directory, fname))
            for name, value in tensors.items():
                if weight_map.get(name) != fname:
                    raise ValueError("%s: tensor %s is not mapped to this shard"
                                     % (fname, name))
                out[name] = value
        missing = set(weight_map) - set(out)
        if missing:
            raise ValueError("index lists tensors absent from the shards: %s"
                             % sorted(missing))
        return out
    single = os.path.join(directory, SINGLE_FILE_NAME)
    if os.path.exists(single):
        return load_file(single)[0]
    raise FileNotFoundError("no %s or %s in %s"
                            % (SINGLE_FILE_NAME, INDEX_FILE_NAME, directory))
