// The CUDA backend's entry points, callable from plain C++ (no CUDA headers).
// Built wherever nvcc is found; exercised only on a machine with a GPU.
// Each op mirrors a CPU op of engine/kernels/ops.h and is parity-tested
// against it (tests/kernels, label `gpu`).
// Thread-safety: functions are stateless; each call synchronises its stream.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "engine/model/dtype.h"

namespace tandem::kernels::cuda {

// Number of CUDA devices that answer (0 when there is no driver or GPU).
int DeviceCount();

// Host-to-host helper for parity tests: copies `n` elements of `src` (dtype
// `t`) to the device, converts them to fp32 there, and copies them back to
// `dst`. Errors: Unavailable when no device answers; Internal on CUDA errors.
absl::Status ConvertToFloatOnDevice(DType t, const void* src, int64_t n, float* dst);

}  // namespace tandem::kernels::cuda
