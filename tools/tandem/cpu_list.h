// CPU lists in the kernel's cpuset syntax ("0-3,6"), for pinning the
// processes `tandem up` starts (--prefill-cores, --decode-cores).
// Thread-safety: pure functions.
#pragma once

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

}  // namespace tandem::cli
