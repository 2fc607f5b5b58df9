// A batch of a worker's KV event log (engine/core/kv_event_log.h) as
// RegisterRequest.kv_events carries it to a router. Used by the worker's
// router registration and by tandem-sim's simulated workers.
// Thread-safety: pure function.
#pragma once

#include "engine/core/kv_event_log.h"
#include "tandem/v1/worker.pb.h"

namespace tandem {

v1::KvEventBatch ToProto(const KvEventLog::Batch& batch);

}  // namespace tandem
