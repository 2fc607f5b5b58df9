// Communicator: the collective operations tensor-parallel ranks need
// (all-reduce sum, all-gather, broadcast, barrier), behind one seam so the
// model code is the same for CPU threads and NCCL.
//
// Every rank of a group calls each operation in the same order with the same
// sizes (a collective); the call returns when the result is in place.
// Thread-safety: one Communicator object per rank, used by that rank's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace tandem {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // data[0..n) = the sum over ranks of each rank's data[0..n).
  virtual void AllReduceSum(float* data, int64_t n) = 0;
  // out[r * n .. (r + 1) * n) = rank r's in[0..n), on every rank.
  virtual void AllGather(const float* in, int64_t n, float* out) = 0;
  // data[0..n) = rank `root`'s data[0..n), on every rank.
  virtual void Broadcast(float* data, int64_t n, int root) = 0;
  virtual void Barrier() = 0;
};

// Ranks as threads of one process: `size` communicators sharing buffers.
// Reductions add the ranks' values in rank order 0, 1, ..., so results are
// deterministic and identical on every rank.
std::vector<std::unique_ptr<Communicator>> MakeCpuThreadCommunicators(int size);

}  // namespace tandem
