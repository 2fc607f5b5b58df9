// The OpenMP environment for engine processes that share CPU cores with
// other engine processes (`tandem up` gives it to such workers; `tandem-sim
// calibrate --workers-share-cores` times steps under it, so its model is the
// one those workers follow). Why these values: tools/tandem/up_command.cc.
// Thread-safety: constants and a getenv read.
#pragma once

#include <cstdlib>

namespace tandem::process {

// "NAME=VALUE" entries.
inline constexpr const char* kSharedCoreOmpEnv[] = {"OMP_WAIT_POLICY=passive", "GOMP_SPINCOUNT=1000"};

// Whether the user chose OpenMP's waiting themselves (then it is left alone).
inline bool UserSetOmpWaiting() {
  return std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr;
}

}  // namespace tandem::process
