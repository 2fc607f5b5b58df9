// UcxTransport: the KvTransport over UCX ucp (one-sided RMA puts), the only
// way KV bytes move between workers (docs/architecture.md, invariant 1). Shared memory or
// CMA on one host, TCP (or RDMA where present) across hosts; UCX picks among
// the transports UCX_TLS allows (README.md "Choosing transports").
//
// One transport = one ucp_context (feature RMA, plus WAKEUP where available)
// and one ucp_worker. RegisterMemory() ucp_mem_map()s the pool once and
// packs its rkey; the descriptor carries the worker address and that rkey.
// Connect() creates (and caches, per peer worker address) an endpoint with
// peer error handling, and unpacks (and caches, per endpoint) the peer's rkey.
// Put() is ucp_put_nbx; Flush() is ucp_ep_flush_nbx, progressed in a loop
// bounded by the caller's timeout.
//
// Put modes: with RMA-capable transports (CMA, knem, xpmem, InfiniBand/RoCE)
// a put is ucp_put_nbx. Where the allowed transports can only emulate puts
// (TCP; shared memory without CMA), UCX 1.13 answers each emulated put from
// the target with an internal reply that aborts the TARGET process when the
// initiator has just died (ucp_request_send's "unexpected error"), so a
// prefill worker killed mid-transfer would take its decode worker down. In
// that case (PutMode::kAuto) puts travel as eager active messages that our
// own handler copies into the registered region after a bounds check, and a
// flush is a fence message the target answers once every earlier message on
// that endpoint has been applied (UCX keeps one endpoint's messages in
// order); the answer's failure is an ordinary error status.
//
// Progress model: over TCP and over shared memory without CMA, UCX emulates
// puts with active messages, so the TARGET must progress its worker for bytes
// to land. By default a background thread progresses the worker (spinning
// briefly after activity, then sleeping on the worker's event fd, waking at
// least every `progress_idle_wait`). With `progress_thread = false` the owner
// must call Progress() regularly, on the target too.
//
// Failure model: an endpoint whose peer died (connection reset, CMA to a dead
// pid, keepalive timeout) is marked failed by UCX's error callback; every
// session on it then fails with Unavailable and the next Connect() to that
// address creates a fresh endpoint. A Flush() that times out retires its
// endpoint the same way (DeadlineExceeded for that call).
//
// Thread-safety: thread-safe. Every ucp call on the worker, its endpoints and
// rkeys is serialised by one internal mutex (worker thread mode SERIALIZED);
// Flush() and the progress thread take it per progress step, so puts from
// other threads interleave with a waiting flush. Sessions are
// thread-compatible. The transport must outlive its sessions (checked).
// This header includes no UCX header.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kv_transfer/transport.h"

namespace tandem {

// Whether the transports in a UCX_TLS-style list can only emulate puts with
// messages: true for a non-empty list without any RMA-capable transport
// (e.g. "tcp", "tcp,self", "posix,self"); false for an empty list (UCX's
// default choice), an exclusion list ("^...") or any RMA-capable entry
// ("sm", "cma", "knem", "xpmem", "rc", "dc", "ib", "all", ...).
bool TlsNeedsMessagePuts(const std::string& tls);

struct UcxTransportOptions {
  enum class PutMode {
    kAuto,      // messages where TlsNeedsMessagePuts(tls or $UCX_TLS), else RMA
    kRma,       // always ucp_put_nbx
    kMessages,  // always eager active messages + fence
  };
  PutMode put_mode = PutMode::kAuto;
  // UCX transports to allow, as UCX_TLS takes them ("tcp,self",
  // "sm,self,cma", "rc,sm,self", ...). Empty: the process environment's
  // UCX_TLS, or UCX's default (all available) when unset.
  std::string tls;
  // Further UCX settings applied after `tls`: name without the "UCX_" prefix
  // → value, e.g. {"KEEPALIVE_INTERVAL", "1s"}.
  std::vector<std::pair<std::string, std::string>> config;
  // Progress the worker on a background thread (see the file comment).
  bool progress_thread = true;
  // Longest sleep of the idle progress thread; also bounds its shutdown.
  absl::Duration progress_idle_wait = absl::Milliseconds(2);
  // After activity, the progress thread spins this long before sleeping.
  absl::Duration progress_spin = absl::Microseconds(500);
  // Endpoints ask UCX for peer error handling (a dead peer fails the
  // endpoint promptly). UCX 1.13's shared-memory transports (posix, sysv)
  // cannot provide it; with only those allowed, endpoints fall back to no
  // error handling, where a dead peer shows as a Flush() timeout
  // (DeadlineExceeded) or a CMA error. Set this to refuse that fallback.
  bool require_peer_error_handling = false;
  // How long destruction waits for each endpoint to close gracefully.
  absl::Duration close_timeout = absl::Seconds(1);
};

class UcxTransport final : public KvTransport {
 public:
  // Creates the UCX context and worker (and the progress thread). Errors:
  // InvalidArgument (bad UCX setting), Unavailable (UCX found no usable
  // transport), Internal.
  static absl::StatusOr<std::unique_ptr<UcxTransport>> Create(const UcxTransportOptions& options);

  // Closes endpoints (gracefully, bounded by close_timeout), unmaps the
  // region, destroys the worker and context. Every session must be gone.
  ~UcxTransport() override;

  absl::StatusOr<MemoryDescriptor> RegisterMemory(void* base, size_t len) override;
  using KvTransport::Connect;
  absl::StatusOr<std::unique_ptr<TransferSession>> Connect(const MemoryDescriptor& remote,
                                                           uint64_t put_token) override;
  // Checks message puts (the target's handler sees each one); in RMA mode
  // the guard is kept but cannot be applied, and this returns false.
  bool GuardPuts(KvPutGuard guard) override;
  absl::StatusOr<MemoryDescriptor> local_descriptor() const override;
  TransportStats stats() const override;

  // Progresses the worker until idle; returns whether anything happened.
  // Needed only with progress_thread = false.
  bool Progress();

  // Endpoints currently cached (healthy peers), for tests and diagnostics.
  size_t num_cached_peers() const;
  // Whether this transport's puts travel as messages (see PutMode).
  bool uses_message_puts() const;

  // UCX state, defined in ucx_internal.h (named here so the sessions and
  // the other ucx_*.cc files can reach it).
  struct Impl;

 private:
  explicit UcxTransport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem
