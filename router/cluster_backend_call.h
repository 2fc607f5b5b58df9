// ClusterBackend's per-request state, shared by its translation units
// (cluster_backend.cc: the request path; cluster_backend_recovery.cc:
// migration, leases, stalls, restarted workers). Private to the router.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/stop_strings.h"
#include "engine/tokenizer/tokenizer.h"
#include "grpcpp/grpcpp.h"
#include "router/cluster_backend.h"
#include "tandem/v1/worker.grpc.pb.h"

namespace tandem {

// One request's state. Guarded by `mu`; gRPC callbacks hold a shared_ptr.
struct ClusterBackend::Call {
  std::string id;
  // The id the workers know the current attempt by: `id`, then `id~n` after
  // the n-th migration. A Release, or a late Renew answer, meant for an
  // earlier attempt can then never touch a later one on the same worker
  // (a Release racing the re-Admit on one worker used to cancel the new
  // reservation: both were processed in whatever order the worker's threads
  // took them).
  std::string attempt_id;
  int attempt_no = 0;  // the n of `id~n`: attempts after the first (migrations and parkings)
  uint64_t seq = 0;  // arrival order (admission's FIFO); set before anyone else sees the call
  std::chrono::steady_clock::time_point started;  // ClusterOptions::now at Start
  ValidatedRequest request;
  Sink sink;
  std::mutex mu;
  bool ended = false;
  bool cancelled = false;
  std::optional<WorkerHandle> decode_worker;  // set once Admit succeeded
  bool prefilled = false;                     // this attempt's KV arrived: on to Decode (it alone fails it now)
  bool decode_started = false;                // the Decode stream owns the reservation now
  bool decode_released = false;               // Release sent or the stream cancelled
  bool admit_in_flight = false;               // an Admit may still create a reservation
  bool reserved = false;                      // Admit succeeded; renewed until decode starts or it ends
  std::vector<int32_t> emitted;               // every token sent to the client, in order
  std::chrono::steady_clock::time_point decode_activity;  // the Decode stream's start or latest message
  bool stalled = false;                       // its Decode stream was cancelled for idling
  int migrations = 0;                         // decode workers this request moved away from
  // Since when a request with tokens sent has found no worker to continue
  // it (ClusterOptions::migration_patience); reset once a prefill succeeds.
  std::optional<std::chrono::steady_clock::time_point> stranded_since;
  // The reservation's lease: its length (AdmitResponse.lease_ms; 0: the
  // worker did not say) and when the router last sent an Admit or Renew
  // that it confirmed; a Prefill must ship within what is left of it.
  uint32_t lease_ms = 0;
  std::chrono::steady_clock::time_point lease_confirmed;
  std::chrono::steady_clock::time_point admit_sent;
  int64_t admission_tokens = 0;               // what it weighs in the window: prompt + replayed tokens
  v1::KvDestination destination;
  std::vector<std::string> tried_prefill;
  int admit_attempts = 0;
  v1::AdmitRequest admit_req;  // each Admit sends a copy taken under mu
  // The Decode stream's context, for TryCancel. Shared with the stream's
  // callbacks, like each Admit's context and reply: a context must outlive
  // its RPC (destroying one under a call in flight drops a reference gRPC
  // still holds), and a new attempt may start its RPC before the old one's
  // callback has run.
  std::shared_ptr<grpc::ClientContext> decode_ctx;
  // The Prefill in flight, if any. Each call owns its context and messages:
  // a reservation found lost mid-prefill is re-admitted, and its next Prefill
  // may start before the old one's callback ran (which then finds it is not
  // `prefill` any more and changes nothing).
  struct PrefillRpc {
    grpc::ClientContext ctx;
    v1::PrefillRequest req;
    v1::PrefillResponse resp;
    WorkerHandle worker;
  };
  std::shared_ptr<PrefillRpc> prefill;
  v1::DecodeRequest decode_req;
  std::unique_ptr<IncrementalDecoder> detok;
  std::unique_ptr<StopStringMatcher> stops;

  // Forgets the current attempt (its decode worker, reservation, Prefill in
  // flight, which is cancelled) and names the next one `id~n`, so a late
  // Release or Renew answer for this one never touches it. Caller holds mu
  // and has released or given up whatever the attempt held.
  void StartNewAttempt() {
    if (prefill) {
      prefill->ctx.TryCancel();
      prefill.reset();
    }
    attempt_id = absl::StrCat(id, "~", ++attempt_no);
    admit_req.set_request_id(attempt_id);
    decode_worker.reset();
    prefilled = false;
    decode_started = false;
    decode_released = false;
    reserved = false;
    stalled = false;
    admit_attempts = 0;
    tried_prefill.clear();
  }
};

}  // namespace tandem
