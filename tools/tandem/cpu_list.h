// CPU lists in the kernel's cpuset syntax ("0-3,6"), for pinning the
// processes `tandem up` starts (--prefill-cores, --decode-cores).
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem::cli {

// Parses "N", "A-B" and comma-separated lists of them into sorted, distinct
// CPU numbers. InvalidArgument names the bad part (empty items, B < A,
// non-numbers, numbers >= 1024). Empty input gives an empty list.
absl::StatusOr<std::vector<int>> ParseCpuList(std::string_view text);

// InvalidArgument naming the first CPU in `cpus` that this process may not
// run on (outside its own affinity mask, e.g. a container's cpuset).
absl::Status CheckCpusAllowed(const std::vector<int>& cpus);

// Whether the worker processes `tandem up` starts would run on shared CPUs:
// false only when there is one worker per role and both roles are pinned to
// disjoint, non-empty CPU lists. An empty list means every CPU.
// Why it matters: an OpenMP thread that spins at a barrier while another
// process's thread needs its core delays both; the launcher makes sharing
// workers wait passively instead (see up_command.cc).
bool WorkersShareCpus(const std::vector<int>& prefill_cpus, const std::vector<int>& decode_cpus,
                      int64_t prefill_workers, int64_t decode_workers);

}  // namespace tandem::cli
