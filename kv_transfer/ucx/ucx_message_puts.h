// The message put protocol of UcxTransport (ucx_transport.h "Put modes"):
// puts as eager active messages that the target's handler bounds-checks and
// copies into its registered region, and flushes as fences the target answers
// once every earlier message on that endpoint has been applied.
//
// Internal to kv_transfer/ucx (includes ucp). Thread-safety: MessagePutState
// is guarded by the owning transport's mutex; the handlers run inside
// ucp_worker_progress, which the transport only calls with that mutex held.
#pragma once

#include <ucp/api/ucp.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "kv_transfer/kv_put_guard.h"
#include "kv_transfer/transport_counters.h"

namespace tandem::ucx_internal {

constexpr unsigned kAmPutId = 0x7401;       // header AmPutHeader, payload = the bytes
constexpr unsigned kAmFenceId = 0x7402;     // header AmFenceHeader, no payload
constexpr unsigned kAmFenceAckId = 0x7403;  // header AmFenceAckHeader, no payload

struct AmPutHeader {
  uint64_t remote_offset;  // into the target's registered region
  uint64_t length;
  uint64_t put_token;      // the destination reservation's (kv_put_guard.h)
};
struct AmFenceHeader {
  uint64_t token;          // names this fence
  uint64_t put_token;      // whose refused puts the answer reports
};
struct AmFenceAckHeader {
  uint64_t token;
  uint64_t rejected;  // puts with this endpoint and put token refused since their last fence
};

// At most this many (endpoint, put token) refusal counts are kept: a sender
// that never fences (it died) must not grow the table without bound. Past
// it the oldest are not tracked; a refused put can then go unreported, which
// never lets a stale transfer through (its reservation is already gone).
constexpr size_t kMaxRejectionEntries = 4096;

// One worker's side of the protocol, as target and as sender.
struct MessagePutState {
  uint8_t* base = nullptr;  // the registered region (target side); set at registration
  uint64_t length = 0;
  uint64_t next_fence_token = 1;
  absl::flat_hash_set<uint64_t> pending_fences;         // sent, unanswered
  absl::flat_hash_map<uint64_t, uint64_t> fence_acks;   // token -> rejected puts
  // Target side: refused puts by (sender endpoint, put token), and the
  // guard that decides (no owners: only the region bounds are checked).
  absl::flat_hash_map<std::pair<ucp_ep_h, uint64_t>, uint64_t> rejected;
  KvPutGuard guard;
  kv_transfer_internal::TransportCounters* counters = nullptr;  // counts refusals; set at registration
  // Sender side: heap copies of headers UCX may read until their sends
  // complete (SendMessage). A send that never completes (its endpoint closed
  // or its worker destroyed first) never runs its callback: whatever is
  // left here is freed with the state, which goes after the worker.
  absl::flat_hash_set<void*> sent_headers;

  MessagePutState() = default;
  MessagePutState(const MessagePutState&) = delete;
  MessagePutState& operator=(const MessagePutState&) = delete;
  ~MessagePutState() {
    for (void* block : sent_headers) std::free(block);
  }
};

// Target side: applies one put message (`header` of `header_length` bytes,
// an AmPutHeader when well formed; `length` payload bytes at `data`; from
// endpoint `from`, null when unknown) after checking it: a well-formed
// eager message whose range lies inside the registered region and, with a
// guard, only in blocks granted to its put token. Returns whether it was
// applied. A refused put is counted against (from, put token) and reported
// by the next fence answer (the sender's flush then fails), never applied.
// The put handler; also called directly by tests and fuzz/.
bool ApplyPutMessage(MessagePutState* state, ucp_ep_h from, const void* header, size_t header_length, void* data,
                     size_t length, bool rendezvous);

// Registers the put, fence and fence-answer handlers on `worker`, with
// `state` (which must outlive the worker) as their argument.
ucs_status_t RegisterMessagePutHandlers(ucp_worker_h worker, MessagePutState* state);

// Sends an eager active message whose header stays owned (heap) until UCX
// completes the send: the API does not promise it copies the header. The
// copy is tracked in `state->sent_headers` (freed by the completion
// callback, or with the state when the send never completes). Called, like
// the callback runs, under the transport's lock.
template <typename Header>
ucs_status_t SendMessage(MessagePutState* state, ucp_ep_h ep, unsigned id, const Header& header, const void* data,
                         size_t length, uint32_t flags) {
  static_assert(std::is_trivially_copyable_v<Header> && alignof(Header) <= alignof(std::max_align_t));
  // One block: the state (for the callback), then the header.
  struct Block {
    MessagePutState* state;
    Header header;
  };
  auto* block = static_cast<Block*>(std::malloc(sizeof(Block)));
  if (block == nullptr) return UCS_ERR_NO_MEMORY;
  block->state = state;
  std::memcpy(&block->header, &header, sizeof(Header));
  state->sent_headers.insert(block);
  auto release = [](Block* b) {
    b->state->sent_headers.erase(b);
    std::free(b);
  };
  ucp_request_param_t param;
  std::memset(&param, 0, sizeof(param));
  param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  param.flags = UCP_AM_SEND_FLAG_EAGER | flags;
  param.cb.send = [](void* /*request*/, ucs_status_t /*status*/, void* user_data) {
    Block* b = static_cast<Block*>(user_data);
    b->state->sent_headers.erase(b);
    std::free(b);
  };
  param.user_data = block;
  ucs_status_ptr_t request = ucp_am_send_nbx(ep, id, &block->header, sizeof(Header), data, length, &param);
  if (request == nullptr) {  // completed in place: the callback will not run
    release(block);
    return UCS_OK;
  }
  if (UCS_PTR_IS_ERR(request)) {
    release(block);
    return UCS_PTR_STATUS(request);
  }
  ucp_request_free(request);  // the callback still runs on completion
  return UCS_OK;
}

}  // namespace tandem::ucx_internal
