// The UCX context and worker of UcxTransport and the loop that progresses
// them: Create() (UCX settings, ucp_init with RMA + active messages, plus
// WAKEUP where the transports allow it, the SERIALIZED worker, the message
// put handlers and the put mode), the background progress thread (spin after
// activity, then sleep on the worker's event fd), Progress() for owners
// without that thread, and the teardown that closes endpoints and destroys
// the worker and context. Also the UCX status mapping (FromUcs) and the
// progress helper shared with the other ucx_*.cc files (ucx_internal.h).
#include "kv_transfer/ucx/ucx_internal.h"

#include <poll.h>
#include <ucp/api/ucp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/internal/raw_logging.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "kv_transfer/ucx/ucx_message_puts.h"
#include "kv_transfer/ucx/ucx_transport.h"

namespace tandem {
namespace ucx_internal {

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

}  // namespace ucx_internal

using ucx_internal::FromUcs;
using ucx_internal::ProgressAll;
using ucx_internal::RegisterMessagePutHandlers;

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

TransportStats UcxTransport::stats() const { return impl_->counters.Snapshot(); }

bool UcxTransport::Progress() {
  absl::MutexLock lock(&impl_->mu);
  return impl_->ProgressLocked() > 0;
}

bool UcxTransport::uses_message_puts() const { return impl_->message_puts; }

}  // namespace tandem
