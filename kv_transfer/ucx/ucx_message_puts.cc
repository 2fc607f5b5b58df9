// Message puts: the target's handlers, their registration, and which
// UCX_TLS lists need them. Thread-safety: see ucx_message_puts.h.
#include "kv_transfer/ucx/ucx_message_puts.h"

#include <cctype>
#include <string>
#include <utility>

#include "kv_transfer/transport_counters.h"
#include "kv_transfer/ucx/ucx_transport.h"

namespace tandem {
namespace ucx_internal {
namespace {

// Target side: one put message as UCX delivers it.
ucs_status_t OnPutMessage(void* arg, const void* header, size_t header_length, void* data, size_t length,
                          const ucp_am_recv_param_t* param) {
  ucp_ep_h from = (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) ? param->reply_ep : nullptr;
  ApplyPutMessage(static_cast<MessagePutState*>(arg), from, header, header_length, data, length,
                  (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0);
  return UCS_OK;  // the payload is not kept
}

// Target side: every earlier message on this endpoint has been applied (one
// endpoint's messages arrive in order), so answer the fence.
ucs_status_t OnFenceMessage(void* arg, const void* header, size_t header_length, void* /*data*/,
                            size_t /*length*/, const ucp_am_recv_param_t* param) {
  auto* state = static_cast<MessagePutState*>(arg);
  if (header_length != sizeof(AmFenceHeader) || !(param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP)) {
    return UCS_OK;  // malformed: no answer, the sender's flush times out
  }
  AmFenceHeader h{};
  std::memcpy(&h, header, sizeof(h));
  uint64_t rejected = 0;
  if (auto it = state->rejected.find({param->reply_ep, h.put_token}); it != state->rejected.end()) {
    rejected = it->second;
    state->rejected.erase(it);
  }
  // A failure to answer (the sender died) is an ordinary status here, unlike
  // the reply of UCX's emulated puts; the sender's flush reports it.
  (void)SendMessage(state, param->reply_ep, kAmFenceAckId, AmFenceAckHeader{h.token, rejected}, nullptr, 0, 0);
  return UCS_OK;
}

// Sender side: records the answer to a fence it is waiting for.
ucs_status_t OnFenceAckMessage(void* arg, const void* header, size_t header_length, void* /*data*/,
                               size_t /*length*/, const ucp_am_recv_param_t* /*param*/)
    {
  auto* state = static_cast<MessagePutState*>(arg);
  if (header_length != sizeof(AmFenceAckHeader)) return UCS_OK;
  AmFenceAckHeader h{};
  std::memcpy(&h, header, sizeof(h));
  if (state->pending_fences.erase(h.token) > 0) state->fence_acks[h.token] = h.rejected;
  return UCS_OK;
}

}  // namespace

bool ApplyPutMessage(MessagePutState* state, ucp_ep_h from, const void* header, size_t header_length, void* data,
                     size_t length, bool rendezvous) {
  AmPutHeader h{};
  // Senders force eager delivery, so the payload is here (valid during this
  // call); a rendezvous message would need a receive we never post.
  bool ok = header_length == sizeof(h) && !rendezvous;
  if (ok) {
    std::memcpy(&h, header, sizeof(h));
    ok = h.length == length && state->base != nullptr &&
         kv_transfer_internal::InRange(h.remote_offset, h.length, state->length);
  }
  if (ok) {
    auto write = [&] { std::memcpy(state->base + h.remote_offset, data, length); };
    if (state->guard.owners == nullptr) {
      write();
    } else {
      ok = state->guard.owners->WriteIfGranted(state->guard.layout, h.put_token, h.remote_offset, h.length, write);
    }
  }
  if (!ok) {
    if (state->counters != nullptr) state->counters->refused.fetch_add(1, std::memory_order_relaxed);
    const std::pair<ucp_ep_h, uint64_t> key{from, h.put_token};
    if (state->rejected.size() < kMaxRejectionEntries || state->rejected.contains(key)) ++state->rejected[key];
  }
  return ok;
}

ucs_status_t RegisterMessagePutHandlers(ucp_worker_h worker, MessagePutState* state) {
  const std::pair<unsigned, ucp_am_recv_callback_t> handlers[] = {
      {kAmPutId, &OnPutMessage}, {kAmFenceId, &OnFenceMessage}, {kAmFenceAckId, &OnFenceAckMessage}};
  for (const auto& [id, cb] : handlers) {
    ucp_am_handler_param_t hp;
    std::memset(&hp, 0, sizeof(hp));
    hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG |
                    UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
    hp.id = id;
    hp.cb = cb;
    hp.arg = state;
    hp.flags = UCP_AM_FLAG_WHOLE_MSG;
    if (ucs_status_t s = ucp_worker_set_am_recv_handler(worker, &hp); s != UCS_OK) return s;
  }
  return UCS_OK;
}

}  // namespace ucx_internal

bool TlsNeedsMessagePuts(const std::string& tls) {
  // Entries (and aliases) that give UCX real one-sided puts.
  static const char* const kRmaCapable[] = {"sm",  "cma",   "knem",    "xpmem",    "all",      "ib",
                                            "rc",  "rc_v",  "rc_x",    "rc_verbs", "rc_mlx5",  "dc",
                                            "dc_x", "dc_mlx5", "cuda_ipc", "rocm_ipc", "gdr_copy"};
  bool any = false;
  size_t begin = 0;
  while (begin <= tls.size()) {
    size_t end = tls.find(',', begin);
    if (end == std::string::npos) end = tls.size();
    std::string entry = tls.substr(begin, end - begin);
    entry.erase(0, entry.find_first_not_of(" \t"));
    entry.erase(entry.find_last_not_of(" \t") + 1);
    begin = end + 1;
    if (entry.empty()) continue;
    if (entry[0] == '^') return false;  // "all but ...": UCX's own choice
    any = true;
    for (char& c : entry) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    for (const char* rma : kRmaCapable) {
      if (entry == rma) return false;
    }
  }
  return any;
}

}  // namespace tandem
