// UcxSession: the TransferSession behind UcxTransport::Connect(), holding
// the put and flush paths of both put modes (ucx_transport.h "Put modes").
// In RMA mode a put is ucp_put_nbx and a flush is ucp_ep_flush_nbx; in
// message mode a put is an eager active message (applied by the target's
// handler in ucx_message_puts.cc) and a flush is a fence the target answers.
// Both flushes progress the worker in a loop bounded by the caller's timeout
// and retire the endpoint when it runs out. Sessions are thread-compatible.
//
// Why puts are fire-and-forget: a put request completing only means the local
// buffer is reusable, not that the bytes reached the target. Remote
// visibility comes from ucp_ep_flush_nbx, so Put() releases its request at
// once (UCX frees it on completion) and Flush() is the one place that waits.
// A failed put also fails the endpoint, which the flush then reports.
#include "kv_transfer/ucx/ucx_internal.h"

#include <ucp/api/ucp.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "kv_transfer/transport.h"
#include "kv_transfer/transport_counters.h"
#include "kv_transfer/ucx/ucx_message_puts.h"
#include "kv_transfer/ucx/ucx_transport.h"

namespace tandem {
namespace ucx_internal {
namespace {

using kv_transfer_internal::InRange;

class UcxSession final : public TransferSession {
 public:
  UcxSession(UcxTransport::Impl* impl, std::shared_ptr<Peer> peer, ucp_rkey_h rkey,
             uint64_t remote_base, uint64_t remote_length, uint64_t put_token)
      : impl_(impl),
        peer_(std::move(peer)),
        rkey_(rkey),
        remote_base_(remote_base),
        remote_length_(remote_length),
        put_token_(put_token) {
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
        const ucs_status_t s = SendMessage(&impl_->messages, peer_->ep, kAmPutId, AmPutHeader{remote_offset, length, put_token_},
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
      const ucs_status_t s = SendMessage(&impl_->messages, peer_->ep, kAmFenceId, AmFenceHeader{token, put_token_}, nullptr, 0,
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
          return absl::FailedPreconditionError(absl::StrCat(
              "the KV transfer target refused ", rejected,
              " puts (outside its region, or into blocks not reserved under this transfer's token: "
              "the reservation was released or expired)"));
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
  const uint64_t put_token_;
  uint64_t bytes_put_ = 0;
  absl::Status failure_;  // sticky once set
};

}  // namespace

std::unique_ptr<TransferSession> MakeUcxSession(UcxTransport::Impl* impl, std::shared_ptr<Peer> peer,
                                                ucp_rkey_h rkey, uint64_t remote_base,
                                                uint64_t remote_length, uint64_t put_token) {
  return std::make_unique<UcxSession>(impl, std::move(peer), rkey, remote_base, remote_length, put_token);
}

}  // namespace ucx_internal
}  // namespace tandem
