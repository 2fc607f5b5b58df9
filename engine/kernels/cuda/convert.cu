// fp16/bf16 -> fp32 conversion on the device, and device discovery.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "engine/kernels/cuda/cuda_backend.h"

namespace tandem::kernels::cuda {
namespace {

template <typename T>
__device__ float ToFloat(T v);
template <>
__device__ float ToFloat<float>(float v) { return v; }
template <>
__device__ float ToFloat<__half>(__half v) { return __half2float(v); }
template <>
__device__ float ToFloat<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__global__ void ConvertKernel(const T* src, int64_t n, float* dst) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = ToFloat(src[i]);
}

absl::Status Check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(std::string(what) + ": " + cudaGetErrorString(e));
}

template <typename T>
absl::Status Run(const void* src, int64_t n, float* dst) {
  T* d_src = nullptr;
  float* d_dst = nullptr;
  absl::Status st = Check(cudaMalloc(&d_src, n * sizeof(T)), "cudaMalloc");
  if (st.ok()) st = Check(cudaMalloc(&d_dst, n * sizeof(float)), "cudaMalloc");
  if (st.ok()) st = Check(cudaMemcpy(d_src, src, n * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  if (st.ok()) {
    constexpr int kThreads = 256;
    const int64_t blocks = (n + kThreads - 1) / kThreads;
    ConvertKernel<T><<<static_cast<unsigned>(blocks), kThreads>>>(d_src, n, d_dst);
    st = Check(cudaGetLastError(), "ConvertKernel launch");
  }
  if (st.ok()) st = Check(cudaMemcpy(dst, d_dst, n * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
  cudaFree(d_src);
  cudaFree(d_dst);
  return st;
}

}  // namespace

int DeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) return 0;
  return count;
}

absl::Status ConvertToFloatOnDevice(DType t, const void* src, int64_t n, float* dst) {
  if (DeviceCount() == 0) return absl::UnavailableError("no CUDA device");
  if (n == 0) return absl::OkStatus();
  switch (t) {
    case DType::kF32:
      return Run<float>(src, n, dst);
    case DType::kF16:
      return Run<__half>(src, n, dst);
    case DType::kBF16:
      return Run<__nv_bfloat16>(src, n, dst);
  }
  return absl::InvalidArgumentError("unknown dtype");
}

}  // namespace tandem::kernels::cuda
