#include "router/router_flags.h"

#include "absl/strings/str_cat.h"

namespace tandem::cli {
namespace {

absl::Status InRange(const char* flag, int64_t v, int64_t lo, int64_t hi) {
  if (v >= lo && v <= hi) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("--", flag, " must be in [", lo, ", ", hi, "] (got ", v, ")"));
}

}  // namespace

void RouterListenFlags::Register(FlagSet& f) {
  f.AddString("host", &host, "address of the public listener: Generation, health, reflection (default 127.0.0.1)");
  f.AddInt("port", &port, "port of the public listener (default 50051; 0 picks a free one)");
  f.AddString("cluster-host", &cluster_host,
              "address of the cluster listener, the control plane workers register on (WorkerRegistry, health, "
              "reflection); keep it on the internal network (default: --host)");
  f.AddInt("cluster-port", &cluster_port,
           "port of the cluster listener; workers' --router names it (default 50052; 0 picks a free one; must "
           "differ from --port unless both are 0)");
}

absl::Status RouterListenFlags::Validate() const {
  for (absl::Status st : {InRange("port", port, 0, 65535), InRange("cluster-port", cluster_port, 0, 65535)}) {
    if (!st.ok()) return st;
  }
  if (port == cluster_port && port != 0) {
    return absl::InvalidArgumentError(absl::StrCat("--cluster-port must differ from --port (both ", port,
                                                   "): the control plane never shares the public listener"));
  }
  return absl::OkStatus();
}

void RouterTuningFlags::Register(FlagSet& f) {
  f.AddInt("max-prefill-tokens-per-worker", &max_prefill_tokens_per_worker,
           "admission: requests hold a decode reservation while waiting for or running their prefill only "
           "while their prompt tokens sum to at most this many per live prefill worker (default 8192; one "
           "bigger prompt goes alone); the rest wait in the router's queue");
  f.AddInt("max-queued", &max_queued,
           "requests that may wait in the router's queue for admission or a decode worker with room (default "
           "1024; then RESOURCE_EXHAUSTED)");
  f.AddInt("max-queued-tokens", &max_queued_tokens,
           "prompt tokens that may wait in the router's queue (default 1048576; then RESOURCE_EXHAUSTED)");
  f.AddInt("prefill-timeout-ms", &prefill_timeout_ms, "one prefill call incl. its KV transfer (default 120000)");
  f.AddInt("max-migrations", &max_migrations,
           "move a request whose decode worker fails mid-stream to another one at most this many times "
           "(token replay; default 3; 0: end such streams UNAVAILABLE)");
  f.AddInt("migration-patience-ms", &migration_patience_ms,
           "a request that has streamed tokens and finds no worker to continue it waits this long for one "
           "(retried every --lease-renew-ms) before it ends UNAVAILABLE (default 30000)");
  f.AddInt("decode-idle-timeout-ms", &decode_idle_timeout_ms,
           "a Decode stream with no token for this long is a stalled worker: cancel it and migrate the request "
           "(default 30000)");
  f.AddInt("lease-renew-ms", &lease_renew_ms,
           "renew the decode reservations of requests waiting for their prefill this often (default 1000; keep "
           "it well under the decode workers' --reservation-timeout-ms)");
  f.AddInt("drain-timeout-s", &drain_timeout_s,
           "on SIGTERM, how long streams in flight may run on before the router exits (default 30)");
  f.AddString("routing", &routing,
              "how prefill and decode workers are chosen: kv-aware (default: weigh the prompt's prefix a worker "
              "already holds in its KV cache against the work in flight there), least-loaded (fewest requests "
              "in flight), round-robin");
  f.AddFloat("kv-overlap-weight", &kv_overlap_weight,
             "kv-aware routing's cost = WEIGHT x prompt blocks the worker must compute + blocks in flight there "
             "(default 1; larger favours cache hits over load)");
  f.AddInt("prefix-index-blocks", &prefix_index_blocks,
           "KV blocks the router remembers per worker for kv-aware routing (default 131072; least recently "
           "stored forgotten first)");
}

absl::Status RouterTuningFlags::Validate() const {
  for (absl::Status st : {InRange("max-prefill-tokens-per-worker", max_prefill_tokens_per_worker, 1, int64_t{1} << 40),
                          InRange("max-queued", max_queued, 0, 1000000),
                          InRange("max-queued-tokens", max_queued_tokens, 0, int64_t{1} << 40),
                          InRange("prefill-timeout-ms", prefill_timeout_ms, 1, 3600000),
                          InRange("max-migrations", max_migrations, 0, 100),
                          InRange("migration-patience-ms", migration_patience_ms, 0, 3600000),
                          InRange("decode-idle-timeout-ms", decode_idle_timeout_ms, 100, 3600000),
                          InRange("lease-renew-ms", lease_renew_ms, 10, 600000),
                          InRange("drain-timeout-s", drain_timeout_s, 0, 86400),
                          InRange("prefix-index-blocks", prefix_index_blocks, 1, int64_t{1} << 32),
                          ParseRoutingMode(routing).status()}) {
    if (!st.ok()) return st;
  }
  if (kv_overlap_weight && !(*kv_overlap_weight >= 0.0f && *kv_overlap_weight <= 1000.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--kv-overlap-weight must be in [0, 1000], got ", *kv_overlap_weight));
  }
  return absl::OkStatus();
}

void RouterTuningFlags::Apply(ClusterOptions* o) const {
  o->max_queued = static_cast<int>(max_queued);
  o->max_queued_tokens = max_queued_tokens;
  o->max_prefill_tokens_per_worker = max_prefill_tokens_per_worker;
  o->prefill_timeout = std::chrono::milliseconds(prefill_timeout_ms);
  o->max_migrations = static_cast<int>(max_migrations);
  o->migration_patience = std::chrono::milliseconds(migration_patience_ms);
  o->decode_idle_timeout = std::chrono::milliseconds(decode_idle_timeout_ms);
  o->lease_renew_interval = std::chrono::milliseconds(lease_renew_ms);
  if (absl::StatusOr<RoutingMode> mode = ParseRoutingMode(routing); mode.ok()) o->routing.mode = *mode;
  if (kv_overlap_weight) o->routing.overlap_weight = *kv_overlap_weight;
  o->routing.index_blocks_per_worker = prefix_index_blocks;
}

}  // namespace tandem::cli
