// Internals of UcxTransport shared by its implementation files: the UCX
// state behind the public class (UcxTransport::Impl: context, worker,
// registered region, endpoint cache, progress thread), one remote worker's
// cached endpoint and rkeys (Peer), the UCX status mapping (FromUcs), the
// worker progress helper, and the factory for sessions. ucx_worker.cc sets up
// and tears down the context and worker and runs the progress loop,
// ucx_transport.cc registers memory and manages endpoints and Connect(), and
// ucx_session.cc holds the put and flush paths. Internal to kv_transfer/ucx
// (includes ucp); the transport's model is described in ucx_transport.h.
//
// Lifetimes: a Peer (endpoint + its unpacked rkeys) is shared by the cache and
// the sessions on it. Retiring a peer (error callback or flush timeout)
// destroys its rkeys and force-closes its endpoint under the mutex and marks
// it closed, so no session touches a dead ucp handle afterwards.
// Thread-safety: `mu` serialises all ucp calls; counters and peer failure
// flags are atomics (the error callback only stores atomics).
#pragma once

#include <ucp/api/ucp.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "kv_transfer/transport_counters.h"
#include "kv_transfer/ucx/ucx_message_puts.h"
#include "kv_transfer/ucx/ucx_transport.h"

namespace tandem {
namespace ucx_internal {

// Maps a UCX status to the absl code that tells the caller what to do.
absl::Status FromUcs(ucs_status_t status, absl::string_view what);

// One remote worker: the cached endpoint and the rkeys unpacked on it.
struct Peer {
  explicit Peer(std::string address) : address(std::move(address)) {}

  const std::string address;
  ucp_ep_h ep = nullptr;                                 // guarded by Impl::mu
  absl::flat_hash_map<std::string, ucp_rkey_h> rkeys;    // guarded by Impl::mu
  bool closed = false;                                   // guarded by Impl::mu
  std::atomic<bool> failed{false};  // set by the error callback
  std::atomic<int> error{UCS_OK};   // the ucs_status_t that failed it

  absl::Status FailureStatus() const {
    const auto status = static_cast<ucs_status_t>(error.load());
    return absl::UnavailableError(
        absl::StrCat("KV transfer peer failed: ",
                     status == UCS_OK ? "endpoint retired" : ucs_status_string(status)));
  }
};

// Progresses `worker` until idle. Returns the number of events processed.
unsigned ProgressAll(ucp_worker_h worker);

}  // namespace ucx_internal

struct UcxTransport::Impl {
  using Peer = ucx_internal::Peer;

  explicit Impl(const UcxTransportOptions& options) : options(options) {}
  ~Impl();

  // Retires every peer the error callback failed. Call after progressing.
  void ReapFailedPeersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  // Destroys the peer's rkeys, force-closes its endpoint (non-blocking) and
  // drops it from the cache.
  void RetirePeerLocked(Peer& peer) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  unsigned ProgressLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const unsigned n = ucx_internal::ProgressAll(worker);
    ReapFailedPeersLocked();
    return n;
  }
  void ProgressThreadMain();
  // ucp_ep_create with peer error handling, or without it where the allowed
  // transports cannot detect peer failure (see ucx_transport.h).
  ucs_status_t CreateEndpointLocked(Peer& peer) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  // Wakes the progress thread if it sleeps (after posting work).
  void Kick() {
    if (progress_sleeping.load(std::memory_order_acquire)) ucp_worker_signal(worker);
    last_post_ns.store(absl::GetCurrentTimeNanos(), std::memory_order_relaxed);
  }

  const UcxTransportOptions options;
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  int event_fd = -1;  // -1: no wakeup support, the progress thread polls

  mutable absl::Mutex mu;
  bool registered ABSL_GUARDED_BY(mu) = false;
  ucp_mem_h memh ABSL_GUARDED_BY(mu) = nullptr;  // RMA mode only: message mode maps nothing remotely
  uint8_t* base = nullptr;  // set once at registration, under mu
  uint64_t length = 0;
  MemoryDescriptor descriptor ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<std::string, std::shared_ptr<Peer>> peers ABSL_GUARDED_BY(mu);
  // Set once an endpoint could not get peer error handling (UCX 1.13 shared
  // memory lacks it); later endpoints skip the attempt.
  bool peer_errors_unsupported ABSL_GUARDED_BY(mu) = false;
  // Retired peers stay allocated until the worker is destroyed: UCX may still
  // hold their address as the error callback argument.
  std::vector<std::shared_ptr<Peer>> retired ABSL_GUARDED_BY(mu);

  // Message put mode (see ucx_transport.h). Its handlers run inside
  // ucp_worker_progress, which is only ever called with `mu` held.
  bool message_puts = false;  // set once in Create()
  ucx_internal::MessagePutState messages ABSL_GUARDED_BY(mu);

  kv_transfer_internal::TransportCounters counters;
  std::atomic<int> live_sessions{0};
  std::atomic<bool> stop{false};
  std::atomic<bool> progress_sleeping{false};
  std::atomic<int64_t> last_post_ns{0};
  std::thread progress_thread;
};

namespace ucx_internal {

// A session on `peer` putting into the remote region [remote_base, +remote_length)
// with `rkey` (owned by `peer`). Defined in ucx_session.cc.
// Message puts and fences carry `put_token`.
std::unique_ptr<TransferSession> MakeUcxSession(UcxTransport::Impl* impl, std::shared_ptr<Peer> peer,
                                                ucp_rkey_h rkey, uint64_t remote_base,
                                                uint64_t remote_length, uint64_t put_token);

}  // namespace ucx_internal
}  // namespace tandem
