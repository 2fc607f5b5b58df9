// The load a worker reports to the router (WorkerStats), from its engine's
// stats; the same for both roles.
// Thread-safety: a pure function.
#pragma once

#include "engine/core/async_engine.h"
#include "tandem/v1/worker.pb.h"

namespace tandem {

void FillWorkerStats(const EngineStats& s, v1::WorkerStats* out);

}  // namespace tandem
