#include "worker/kv_event_proto.h"

namespace tandem {

v1::KvEventBatch ToProto(const KvEventLog::Batch& batch) {
  v1::KvEventBatch out;
  out.set_first_seq(batch.first_seq);
  out.set_snapshot(batch.snapshot);
  for (const KvEventLog::Run& run : batch.runs) {
    v1::KvEventRun* r = out.add_runs();
    r->set_evicted(run.removed);
    r->mutable_block_hashes()->Add(run.hashes.begin(), run.hashes.end());
  }
  return out;
}

}  // namespace tandem
