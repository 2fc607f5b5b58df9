// UcxTransport implementation over ucp. See ucx_transport.h for the model.
//
// Why puts are fire-and-forget: a put request completing only means the local
// buffer is reusable, not that the bytes reached the target. Remote
// visibility comes from ucp_ep_flush_nbx, so Put() releases its request at
// once (UCX frees it on completion) and Flush() is the one place that waits.
// A failed put also fails the endpoint, which the flush then reports.
//
// Lifetimes: a Peer (endpoint + its unpacked rkeys) is shared by the cache and
// the sessions on it. Retiring a peer (error callback or flush timeout)
// destroys its rkeys and force-closes its endpoint under the mutex and marks
// it closed, so no session touches a dead ucp handle afterwards.
// Thread-safety: `mu` serialises all ucp calls; counters and peer failure
// flags are atomics (the error callback only stores atomics).
#include "kv_transfer/ucx/ucx_transport.h"

#include <poll.h>
#include <ucp/api/ucp.h>

#include <algorithm>
#include <cstdlib>
#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/internal/raw_logging.h"
#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "kv_transfer/transport_counters.h"
#include "kv_transfer/ucx/ucx_message_puts.h"

namespace tandem {
namespace {

using kv_transfer_internal::InRange;
using kv_transfer_internal::TransportCounters;
using ucx_internal::AmFenceHeader;
using ucx_internal::AmPutHeader;
using ucx_internal::kAmFenceId;
using ucx_internal::kAmPutId;
using ucx_internal::MessagePutState;
using ucx_internal::RegisterMessagePutHandlers;
using ucx_internal::SendMessage;

// Maps a UCX status to the absl code that tells the caller what to do.
absl::Status FromUcs(ucs_status_t status, absl::string_view what) {
  if (status == UCS_OK) return absl::OkStatus();
  const std::string message = absl::StrCat(what, ": ", ucs_status_string(status));
  switch (status) {
    case UCS_ERR_INVALID_PARAM:
    case UCS_ERR_INVALID_ADDR:
      return absl::InvalidArgumentError(message);
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_NO_RESOURCE:
    case UCS_ERR_EXCEEDS_LIMIT:
      return absl::ResourceExhaustedError(message);
    case UCS_ERR_TIMED_OUT:
      return absl::DeadlineExceededError(message);
    case UCS_ERR_UNSUPPORTED:
      return absl::UnimplementedError(message);
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_NO_DEVICE:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_REJECTED:
    case UCS_ERR_CANCELED:
    case UCS_ERR_IO_ERROR:
    case UCS_ERR_NOT_CONNECTED:
    case UCS_ERR_SHMEM_SEGMENT:
    case UCS_ERR_BUSY:
      return absl::UnavailableError(message);
    default:
      return absl::InternalError(message);
  }
}

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

void OnEndpointError(void* arg, ucp_ep_h /*ep*/, ucs_status_t status) {
  auto* peer = static_cast<Peer*>(arg);
  peer->error.store(status);
  peer->failed.store(true);
}

// Progresses `worker` until idle. Returns the number of events processed.
unsigned ProgressAll(ucp_worker_h worker) {
  unsigned total = 0;
  for (int i = 0; i < 64; ++i) {
    const unsigned n = ucp_worker_progress(worker);
    if (n == 0) break;
    total += n;
  }
  return total;
}

}  // namespace

struct UcxTransport::Impl {
  explicit Impl(const UcxTransportOptions& options) : options(options) {}
  ~Impl();

  // Retires every peer the error callback failed. Call after progressing.
  void ReapFailedPeersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  // Destroys the peer's rkeys, force-closes its endpoint (non-blocking) and
  // drops it from the cache.
  void RetirePeerLocked(Peer& peer) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  unsigned ProgressLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const unsigned n = ProgressAll(worker);
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
  ucp_mem_h memh ABSL_GUARDED_BY(mu) = nullptr;
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
  MessagePutState messages ABSL_GUARDED_BY(mu);

  TransportCounters counters;
  std::atomic<int> live_sessions{0};
  std::atomic<bool> stop{false};
  std::atomic<bool> progress_sleeping{false};
  std::atomic<int64_t> last_post_ns{0};
  std::thread progress_thread;
};

namespace {

class UcxSession final : public TransferSession {
 public:
  UcxSession(UcxTransport::Impl* impl, std::shared_ptr<Peer> peer, ucp_rkey_h rkey,
             uint64_t remote_base, uint64_t remote_length)
      : impl_(impl),
        peer_(std::move(peer)),
        rkey_(rkey),
        remote_base_(remote_base),
        remote_length_(remote_length) {
    impl_->live_sessions.fetch_add(1);
  }
  ~UcxSession() override { impl_->live_sessions.fetch_sub(1); }

  absl::Status Put(uint64_t local_offset, uint64_t remote_offset, uint64_t length) override {
    return impl_->counters.CountIfFailed(DoPut(local_offset, remote_offset, length));
  }

  absl::Status Flush(absl::Duration timeout) override {
    const absl::Time start = absl::Now();
    absl::Status status = DoFlush(start + timeout);
    if (!status.ok()) failure_ = status;
    return impl_->counters.CountFlush(std::move(status), absl::Now() - start);
  }

  uint64_t bytes_put() const override { return bytes_put_; }
  uint64_t remote_length() const override { return remote_length_; }

 private:
  absl::Status DoPut(uint64_t local_offset, uint64_t remote_offset, uint64_t length) {
    if (!InRange(local_offset, length, impl_->length)) {
      return absl::InvalidArgumentError(absl::StrCat("put source [", local_offset, ", +", length,
                                                     ") outside local region of ", impl_->length,
                                                     " bytes"));
    }
    if (!InRange(remote_offset, length, remote_length_)) {
      return absl::InvalidArgumentError(absl::StrCat("put target [", remote_offset, ", +", length,
                                                     ") outside remote region of ", remote_length_,
                                                     " bytes"));
    }
    if (!failure_.ok()) return failure_;
    if (length == 0) return absl::OkStatus();
    {
      absl::MutexLock lock(&impl_->mu);
      if (peer_->closed || peer_->failed.load()) {
        failure_ = peer_->FailureStatus();
        return failure_;
      }
      if (impl_->message_puts) {
        const ucs_status_t s = SendMessage(peer_->ep, kAmPutId, AmPutHeader{remote_offset, length},
                                           impl_->base + local_offset, length, UCP_AM_SEND_FLAG_REPLY);
        if (s != UCS_OK) {
          failure_ = peer_->failed.load() ? peer_->FailureStatus() : FromUcs(s, "ucp_am_send_nbx (put)");
          return failure_;
        }
      } else if (absl::Status st = PostRmaPut(local_offset, remote_offset, length); !st.ok()) {
        failure_ = st;
        return failure_;
      }
    }
    impl_->Kick();
    bytes_put_ += length;
    impl_->counters.CountPut(length);
    return absl::OkStatus();
  }

  absl::Status PostRmaPut(uint64_t local_offset, uint64_t remote_offset, uint64_t length)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(impl_->mu) {
    {
      ucp_request_param_t param;
      std::memset(&param, 0, sizeof(param));
      param.op_attr_mask = UCP_OP_ATTR_FIELD_MEMH;
      param.memh = impl_->memh;
      ucs_status_ptr_t request = ucp_put_nbx(peer_->ep, impl_->base + local_offset, length,
                                             remote_base_ + remote_offset, rkey_, &param);
      if (UCS_PTR_IS_ERR(request)) {
        return peer_->failed.load() ? peer_->FailureStatus() : FromUcs(UCS_PTR_STATUS(request), "ucp_put_nbx");
      }
      if (request != nullptr) ucp_request_free(request);  // released on completion
    }
    return absl::OkStatus();
  }

  // Message mode: send a fence and wait for the target's answer, which comes
  // after every earlier put on this endpoint has been applied.
  absl::Status DoMessageFlush(absl::Time deadline) {
    uint64_t token = 0;
    {
      absl::MutexLock lock(&impl_->mu);
      if (peer_->closed || peer_->failed.load()) return peer_->FailureStatus();
      token = impl_->messages.next_fence_token++;
      impl_->messages.pending_fences.insert(token);
      const ucs_status_t s = SendMessage(peer_->ep, kAmFenceId, AmFenceHeader{token}, nullptr, 0,
                                         UCP_AM_SEND_FLAG_REPLY);
      if (s != UCS_OK) {
        impl_->messages.pending_fences.erase(token);
        return peer_->failed.load() ? peer_->FailureStatus() : FromUcs(s, "ucp_am_send_nbx (fence)");
      }
    }
    impl_->Kick();
    int idle_rounds = 0;
    while (true) {
      unsigned events = 0;
      {
        absl::MutexLock lock(&impl_->mu);
        events = impl_->ProgressLocked();
        if (auto it = impl_->messages.fence_acks.find(token); it != impl_->messages.fence_acks.end()) {
          const uint64_t rejected = it->second;
          impl_->messages.fence_acks.erase(it);
          if (rejected == 0) return absl::OkStatus();
          return absl::InternalError(absl::StrCat("the KV transfer target refused ", rejected, " puts"));
        }
        if (peer_->closed || peer_->failed.load()) {
          impl_->messages.pending_fences.erase(token);
          return peer_->FailureStatus();
        }
        if (absl::Now() >= deadline) {
          impl_->messages.pending_fences.erase(token);
          impl_->RetirePeerLocked(*peer_);
          return absl::DeadlineExceededError("KV transfer flush did not complete in time; endpoint retired");
        }
      }
      if (events > 0) {
        idle_rounds = 0;
      } else if (++idle_rounds < 64) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }

  absl::Status DoFlush(absl::Time deadline) {
    if (!failure_.ok()) return failure_;
    if (impl_->message_puts) return DoMessageFlush(deadline);
    void* request = nullptr;
    {
      absl::MutexLock lock(&impl_->mu);
      if (peer_->closed || peer_->failed.load()) return peer_->FailureStatus();
      ucp_request_param_t param;
      std::memset(&param, 0, sizeof(param));
      ucs_status_ptr_t r = ucp_ep_flush_nbx(peer_->ep, &param);
      if (r == nullptr) return absl::OkStatus();
      if (UCS_PTR_IS_ERR(r)) {
        return peer_->failed.load() ? peer_->FailureStatus()
                                    : FromUcs(UCS_PTR_STATUS(r), "ucp_ep_flush_nbx");
      }
      request = r;
    }
    impl_->Kick();
    // Bounded wait: progress ourselves (lowest latency) and let the progress
    // thread interleave; back off to short sleeps when nothing happens.
    int idle_rounds = 0;
    while (true) {
      unsigned events = 0;
      {
        absl::MutexLock lock(&impl_->mu);
        events = impl_->ProgressLocked();
        const ucs_status_t status = ucp_request_check_status(request);
        if (status != UCS_INPROGRESS) {
          ucp_request_free(request);
          if (status == UCS_OK) return absl::OkStatus();
          return peer_->failed.load() || peer_->closed ? peer_->FailureStatus()
                                                       : FromUcs(status, "ucp_ep_flush_nbx");
        }
        if (absl::Now() >= deadline) {
          ucp_request_free(request);  // released when the forced close cancels it
          if (!peer_->closed) impl_->RetirePeerLocked(*peer_);
          return absl::DeadlineExceededError(
              "KV transfer flush did not complete in time; endpoint retired");
        }
      }
      if (events > 0) {
        idle_rounds = 0;
      } else if (++idle_rounds < 64) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }

  UcxTransport::Impl* const impl_;
  const std::shared_ptr<Peer> peer_;
  ucp_rkey_h const rkey_;  // owned by peer_
  const uint64_t remote_base_;
  const uint64_t remote_length_;
  uint64_t bytes_put_ = 0;
  absl::Status failure_;  // sticky once set
};

}  // namespace

void UcxTransport::Impl::RetirePeerLocked(Peer& peer) {
  if (peer.closed) return;
  for (auto& [packed, rkey] : peer.rkeys) ucp_rkey_destroy(rkey);
  peer.rkeys.clear();
  ucp_request_param_t param;
  std::memset(&param, 0, sizeof(param));
  param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  param.flags = UCP_EP_CLOSE_FLAG_FORCE;
  ucs_status_ptr_t request = ucp_ep_close_nbx(peer.ep, &param);
  if (UCS_PTR_IS_PTR(request)) ucp_request_free(request);
  peer.ep = nullptr;
  peer.closed = true;
  auto it = peers.find(peer.address);
  if (it != peers.end() && it->second.get() == &peer) {
    retired.push_back(std::move(it->second));
    peers.erase(it);
  }
}

void UcxTransport::Impl::ReapFailedPeersLocked() {
  std::vector<std::shared_ptr<Peer>> failed;
  for (auto& [address, peer] : peers) {
    if (peer->failed.load()) failed.push_back(peer);
  }
  for (auto& peer : failed) RetirePeerLocked(*peer);
}

ucs_status_t UcxTransport::Impl::CreateEndpointLocked(Peer& peer) {
  ucp_ep_params_t params;
  std::memset(&params, 0, sizeof(params));
  params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                      UCP_EP_PARAM_FIELD_ERR_HANDLER;
  params.address = reinterpret_cast<const ucp_address_t*>(peer.address.data());
  params.err_handler.cb = &OnEndpointError;
  params.err_handler.arg = &peer;
  ucs_status_t status = UCS_ERR_UNREACHABLE;
  if (!peer_errors_unsupported) {
    params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    status = ucp_ep_create(worker, &params, &peer.ep);
    if (status != UCS_ERR_UNREACHABLE || options.require_peer_error_handling) return status;
  }
  params.err_mode = UCP_ERR_HANDLING_MODE_NONE;
  status = ucp_ep_create(worker, &params, &peer.ep);
  if (status == UCS_OK) peer_errors_unsupported = true;
  return status;
}

void UcxTransport::Impl::ProgressThreadMain() {
  const int64_t spin_ns = absl::ToInt64Nanoseconds(options.progress_spin);
  const int idle_wait_ms =
      std::max<int>(1, static_cast<int>(absl::ToInt64Milliseconds(options.progress_idle_wait)));
  int64_t last_activity_ns = absl::GetCurrentTimeNanos();
  while (!stop.load()) {
    unsigned events = 0;
    {
      absl::MutexLock lock(&mu);
      events = ProgressLocked();
    }
    const int64_t now = absl::GetCurrentTimeNanos();
    if (events > 0) last_activity_ns = now;
    const int64_t recent = std::max(last_activity_ns, last_post_ns.load(std::memory_order_relaxed));
    if (now - recent < spin_ns) {
      std::this_thread::yield();
      continue;
    }
    if (event_fd >= 0) {
      {
        absl::MutexLock lock(&mu);
        progress_sleeping.store(true, std::memory_order_release);
        if (ucp_worker_arm(worker) != UCS_OK) {  // UCS_ERR_BUSY: events pending
          progress_sleeping.store(false, std::memory_order_release);
          continue;
        }
      }
      pollfd pfd{event_fd, POLLIN, 0};
      poll(&pfd, 1, idle_wait_ms);
      progress_sleeping.store(false, std::memory_order_release);
    } else {
      absl::SleepFor(absl::Milliseconds(idle_wait_ms) / 10);
    }
  }
}

UcxTransport::Impl::~Impl() {
  stop.store(true);
  if (progress_thread.joinable()) {
    if (worker != nullptr) ucp_worker_signal(worker);
    progress_thread.join();
  }
  ABSL_RAW_CHECK(live_sessions.load() == 0, "UcxTransport destroyed while sessions are alive");
  if (worker != nullptr) {
    absl::MutexLock lock(&mu);
    ProgressLocked();
    // Close healthy endpoints gracefully (flushing, and telling the peer),
    // each bounded by close_timeout; force-close failed ones. `remaining`
    // keeps every Peer (an error callback argument) alive past the worker.
    std::vector<std::shared_ptr<Peer>> remaining;
    for (auto& [address, peer] : peers) remaining.push_back(peer);
    for (auto& peer : remaining) {
      if (peer->closed) continue;
      if (peer->failed.load()) {
        RetirePeerLocked(*peer);
        continue;
      }
      for (auto& [packed, rkey] : peer->rkeys) ucp_rkey_destroy(rkey);
      peer->rkeys.clear();
      ucp_request_param_t param;
      std::memset(&param, 0, sizeof(param));
      ucs_status_ptr_t request = ucp_ep_close_nbx(peer->ep, &param);
      const absl::Time deadline = absl::Now() + options.close_timeout;
      bool done = !UCS_PTR_IS_PTR(request);
      while (!done && absl::Now() < deadline) {
        ProgressAll(worker);
        done = ucp_request_check_status(request) != UCS_INPROGRESS;
      }
      // Not done in time: the close request still owns the endpoint, and
      // destroying the worker below cancels it.
      if (UCS_PTR_IS_PTR(request)) ucp_request_free(request);
      peer->ep = nullptr;
      peer->closed = true;
    }
    peers.clear();
    ProgressAll(worker);
    if (memh != nullptr) ucp_mem_unmap(context, memh);
    memh = nullptr;
    ucp_worker_destroy(worker);
    retired.clear();
  }
  if (context != nullptr) ucp_cleanup(context);
}

UcxTransport::UcxTransport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
UcxTransport::~UcxTransport() = default;

absl::StatusOr<std::unique_ptr<UcxTransport>> UcxTransport::Create(
    const UcxTransportOptions& options) {
  auto impl = std::make_unique<Impl>(options);

  ucp_config_t* config = nullptr;
  ucs_status_t status = ucp_config_read(nullptr, nullptr, &config);
  if (status != UCS_OK) return FromUcs(status, "ucp_config_read");
  absl::Status config_status;
  if (!options.tls.empty()) {
    config_status = FromUcs(ucp_config_modify(config, "TLS", options.tls.c_str()), "UCX TLS");
  }
  for (const auto& [name, value] : options.config) {
    if (!config_status.ok()) break;
    config_status = FromUcs(ucp_config_modify(config, name.c_str(), value.c_str()),
                            absl::StrCat("UCX setting ", name, "=", value));
  }
  if (!config_status.ok()) {
    ucp_config_release(config);
    return absl::InvalidArgumentError(config_status.message());
  }

  // WAKEUP lets the idle progress thread sleep on an fd; retry without it if
  // the chosen transports cannot provide events.
  for (const bool wakeup : {true, false}) {
    ucp_params_t params;
    std::memset(&params, 0, sizeof(params));
    params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME;
    params.features = UCP_FEATURE_RMA | UCP_FEATURE_AM | (wakeup ? UCP_FEATURE_WAKEUP : 0);
    params.name = "tandem-kv";
    status = ucp_init(&params, config, &impl->context);
    if (status == UCS_OK) break;
    impl->context = nullptr;
  }
  ucp_config_release(config);
  if (status != UCS_OK) return FromUcs(status, "ucp_init");

  ucp_worker_params_t worker_params;
  std::memset(&worker_params, 0, sizeof(worker_params));
  worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  worker_params.thread_mode = UCS_THREAD_MODE_SERIALIZED;
  status = ucp_worker_create(impl->context, &worker_params, &impl->worker);
  if (status != UCS_OK) {
    impl->worker = nullptr;
    return FromUcs(status, "ucp_worker_create");
  }
  int fd = -1;
  if (ucp_worker_get_efd(impl->worker, &fd) == UCS_OK) impl->event_fd = fd;

  // Every worker can be the target of message puts, whatever its own mode.
  if (ucs_status_t s = RegisterMessagePutHandlers(impl->worker, &impl->messages); s != UCS_OK) {
    return FromUcs(s, "ucp_worker_set_am_recv_handler");
  }
  switch (options.put_mode) {
    case UcxTransportOptions::PutMode::kRma: impl->message_puts = false; break;
    case UcxTransportOptions::PutMode::kMessages: impl->message_puts = true; break;
    case UcxTransportOptions::PutMode::kAuto: {
      const char* env = std::getenv("UCX_TLS");
      impl->message_puts = TlsNeedsMessagePuts(!options.tls.empty() ? options.tls : env != nullptr ? env : "");
      break;
    }
  }

  if (options.progress_thread) {
    Impl* raw = impl.get();
    impl->progress_thread = std::thread([raw] { raw->ProgressThreadMain(); });
  }
  return std::unique_ptr<UcxTransport>(new UcxTransport(std::move(impl)));
}

absl::StatusOr<MemoryDescriptor> UcxTransport::RegisterMemory(void* base, size_t len) {
  if (base == nullptr || len == 0) {
    return absl::InvalidArgumentError("RegisterMemory needs a non-empty region");
  }
  Impl& impl = *impl_;
  absl::MutexLock lock(&impl.mu);
  if (impl.memh != nullptr) return absl::FailedPreconditionError("memory is already registered");

  ucp_mem_map_params_t map_params;
  std::memset(&map_params, 0, sizeof(map_params));
  map_params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  map_params.address = base;
  map_params.length = len;
  ucp_mem_h memh = nullptr;
  if (ucs_status_t s = ucp_mem_map(impl.context, &map_params, &memh); s != UCS_OK) {
    return FromUcs(s, "ucp_mem_map");
  }
  void* rkey_buffer = nullptr;
  size_t rkey_size = 0;
  if (ucs_status_t s = ucp_rkey_pack(impl.context, memh, &rkey_buffer, &rkey_size); s != UCS_OK) {
    ucp_mem_unmap(impl.context, memh);
    return FromUcs(s, "ucp_rkey_pack");
  }
  MemoryDescriptor d;
  d.transport = TransportKind::kUcx;
  d.rkey.assign(static_cast<const char*>(rkey_buffer), rkey_size);
  ucp_rkey_buffer_release(rkey_buffer);

  ucp_address_t* address = nullptr;
  size_t address_size = 0;
  if (ucs_status_t s = ucp_worker_get_address(impl.worker, &address, &address_size); s != UCS_OK) {
    ucp_mem_unmap(impl.context, memh);
    return FromUcs(s, "ucp_worker_get_address");
  }
  d.worker_address.assign(reinterpret_cast<const char*>(address), address_size);
  ucp_worker_release_address(impl.worker, address);
  if (d.worker_address.size() > MemoryDescriptor::kMaxFieldBytes ||
      d.rkey.size() > MemoryDescriptor::kMaxFieldBytes) {
    ucp_mem_unmap(impl.context, memh);
    return absl::InternalError("UCX address or rkey larger than the descriptor allows");
  }
  d.base_address = reinterpret_cast<uintptr_t>(base);
  d.length = len;

  impl.memh = memh;
  impl.base = static_cast<uint8_t*>(base);
  impl.length = len;
  impl.messages.base = impl.base;
  impl.messages.length = len;
  impl.descriptor = d;
  return d;
}

absl::StatusOr<MemoryDescriptor> UcxTransport::local_descriptor() const {
  absl::MutexLock lock(&impl_->mu);
  if (impl_->memh == nullptr) return absl::FailedPreconditionError("no memory registered");
  return impl_->descriptor;
}

absl::StatusOr<std::unique_ptr<TransferSession>> UcxTransport::Connect(
    const MemoryDescriptor& remote) {
  Impl& impl = *impl_;
  auto fail = [&impl](absl::Status status) { return impl.counters.CountIfFailed(std::move(status)); };
  if (remote.transport != TransportKind::kUcx) {
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "not a UCX descriptor (transport ", TransportKindName(remote.transport), ")")));
  }
  if (remote.worker_address.empty() || remote.rkey.empty() || remote.length == 0) {
    return fail(absl::InvalidArgumentError("UCX descriptor lacks an address, rkey or length"));
  }
  absl::MutexLock lock(&impl.mu);
  if (impl.memh == nullptr) {
    return fail(absl::FailedPreconditionError("RegisterMemory must precede Connect"));
  }
  impl.ReapFailedPeersLocked();

  std::shared_ptr<Peer>& slot = impl.peers[remote.worker_address];
  if (slot == nullptr) {
    auto peer = std::make_shared<Peer>(remote.worker_address);
    ucs_status_t s = impl.CreateEndpointLocked(*peer);
    if (s != UCS_OK) {
      impl.peers.erase(remote.worker_address);
      absl::Status status = FromUcs(s, "ucp_ep_create");
      if (!absl::IsInvalidArgument(status)) status = absl::UnavailableError(status.message());
      return fail(std::move(status));
    }
    slot = std::move(peer);
  }
  std::shared_ptr<Peer> peer = slot;
  auto it = peer->rkeys.find(remote.rkey);
  if (it == peer->rkeys.end()) {
    ucp_rkey_h rkey = nullptr;
    if (ucs_status_t s = ucp_ep_rkey_unpack(peer->ep, remote.rkey.data(), &rkey); s != UCS_OK) {
      return fail(absl::InvalidArgumentError(
          absl::StrCat("cannot unpack the peer's rkey: ", ucs_status_string(s))));
    }
    it = peer->rkeys.emplace(remote.rkey, rkey).first;
  }
  return std::unique_ptr<TransferSession>(std::make_unique<UcxSession>(
      &impl, std::move(peer), it->second, remote.base_address, remote.length));
}

TransportStats UcxTransport::stats() const { return impl_->counters.Snapshot(); }

bool UcxTransport::Progress() {
  absl::MutexLock lock(&impl_->mu);
  return impl_->ProgressLocked() > 0;
}

bool UcxTransport::uses_message_puts() const { return impl_->message_puts; }

size_t UcxTransport::num_cached_peers() const {
  absl::MutexLock lock(&impl_->mu);
  return impl_->peers.size();
}

}  // namespace tandem
