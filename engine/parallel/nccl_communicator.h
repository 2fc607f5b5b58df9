// The NCCL Communicator (CUDA builds only): the same collectives as the CPU
// one, on device buffers, over one NCCL communicator per tensor-parallel
// group. Bootstrap: rank 0 makes a unique id (MakeNcclUniqueId), the id travels
// to the other ranks (over the worker API), and each rank joins with its own
// device. No CUDA or NCCL types appear here.
// Thread-safety: one object per rank, used by that rank's thread; each call
// runs on the object's own stream and returns after the stream is done.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/parallel/communicator.h"

namespace tandem {

// An opaque NCCL unique id (ncclUniqueId's bytes). Unavailable without a device.
absl::StatusOr<std::string> MakeNcclUniqueId();

// Joins the group identified by `unique_id` as `rank` of `size` on CUDA
// device `device`. Blocks until every rank has joined. Errors: InvalidArgument
// (bad id, rank or size), Unavailable (no device), Internal (NCCL or CUDA).
// The data pointers later passed to the collectives are device pointers.
absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(const std::string& unique_id, int rank, int size,
                                                                   int device);

}  // namespace tandem
