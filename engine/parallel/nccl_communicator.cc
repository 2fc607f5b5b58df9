#include "engine/parallel/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace tandem {
namespace {

absl::Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

absl::Status NcclStatus(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", ncclGetErrorString(r)));
}

// Collectives have no status in the Communicator contract (a failure there is
// a broken device or peer, which the process cannot recover from).
void MustSucceed(const absl::Status& st) {
  if (!st.ok()) {
    std::fprintf(stderr, "NCCL communicator: %s\n", std::string(st.message()).c_str());
    std::abort();
  }
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, cudaStream_t stream, int rank, int size, int device)
      : comm_(comm), stream_(stream), rank_(rank), size_(size), device_(device) {}
  ~NcclCommunicator() override {
    cudaSetDevice(device_);
    ncclCommDestroy(comm_);
    cudaStreamDestroy(stream_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void AllReduceSum(float* data, int64_t n) override {
    Run(ncclAllReduce(data, data, static_cast<size_t>(n), ncclFloat32, ncclSum, comm_, stream_), "ncclAllReduce");
  }
  void AllGather(const float* in, int64_t n, float* out) override {
    Run(ncclAllGather(in, out, static_cast<size_t>(n), ncclFloat32, comm_, stream_), "ncclAllGather");
  }
  void Broadcast(float* data, int64_t n, int root) override {
    Run(ncclBroadcast(data, data, static_cast<size_t>(n), ncclFloat32, root, comm_, stream_), "ncclBroadcast");
  }
  void Barrier() override {
    // A one-element all-reduce on a scratch device float is NCCL's barrier.
    if (barrier_buf_ == nullptr) MustSucceed(CudaStatus(cudaMalloc(&barrier_buf_, sizeof(float)), "cudaMalloc"));
    AllReduceSum(barrier_buf_, 1);
  }

 private:
  void Run(ncclResult_t r, const char* what) {
    MustSucceed(NcclStatus(r, what));
    MustSucceed(CudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"));
  }

  ncclComm_t comm_;
  cudaStream_t stream_;
  const int rank_, size_, device_;
  float* barrier_buf_ = nullptr;
};

}  // namespace

absl::StatusOr<std::string> MakeNcclUniqueId() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) return absl::UnavailableError("no CUDA device");
  ncclUniqueId id;
  if (absl::Status st = NcclStatus(ncclGetUniqueId(&id), "ncclGetUniqueId"); !st.ok()) return st;
  return std::string(id.internal, sizeof(id.internal));
}

absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(const std::string& unique_id, int rank, int size,
                                                                   int device) {
  ncclUniqueId id;
  if (unique_id.size() != sizeof(id.internal)) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL unique id of ", unique_id.size(), " bytes; want ",
                                                   sizeof(id.internal)));
  }
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL rank ", rank, " of ", size));
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) return absl::UnavailableError("no CUDA device");
  if (device < 0 || device >= devices) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA device ", device, " of ", devices));
  }
  std::memcpy(id.internal, unique_id.data(), sizeof(id.internal));
  if (absl::Status st = CudaStatus(cudaSetDevice(device), "cudaSetDevice"); !st.ok()) return st;
  cudaStream_t stream;
  if (absl::Status st = CudaStatus(cudaStreamCreate(&stream), "cudaStreamCreate"); !st.ok()) return st;
  ncclComm_t comm;
  if (absl::Status st = NcclStatus(ncclCommInitRank(&comm, size, id, rank), "ncclCommInitRank"); !st.ok()) {
    cudaStreamDestroy(stream);
    return st;
  }
  return std::unique_ptr<Communicator>(new NcclCommunicator(comm, stream, rank, size, device));
}

}  // namespace tandem
