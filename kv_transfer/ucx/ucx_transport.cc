// UcxTransport's memory registration and endpoint management: RegisterMemory()
// (ucp_mem_map of the pool, its packed rkey and the worker address in the
// descriptor), the per-peer endpoint cache behind Connect() (endpoints with
// peer error handling where the transports allow it, rkeys unpacked once per
// endpoint), and the retirement of peers that UCX's error callback failed or
// whose flush timed out. The context, worker and progress loop are in
// ucx_worker.cc; the sessions' put and flush paths in ucx_session.cc; the
// shared state (UcxTransport::Impl, Peer) in ucx_internal.h. See
// ucx_transport.h for the model.
#include "kv_transfer/ucx/ucx_transport.h"

#include <ucp/api/ucp.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "kv_transfer/ucx/ucx_internal.h"

namespace tandem {
namespace {

using ucx_internal::FromUcs;
using ucx_internal::MakeUcxSession;
using ucx_internal::Peer;

void OnEndpointError(void* arg, ucp_ep_h /*ep*/, ucs_status_t status) {
  auto* peer = static_cast<Peer*>(arg);
  peer->error.store(status);
  peer->failed.store(true);
}

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

absl::StatusOr<MemoryDescriptor> UcxTransport::RegisterMemory(void* base, size_t len) {
  if (base == nullptr || len == 0) {
    return absl::InvalidArgumentError("RegisterMemory needs a non-empty region");
  }
  Impl& impl = *impl_;
  absl::MutexLock lock(&impl.mu);
  if (impl.registered) return absl::FailedPreconditionError("memory is already registered");

  MemoryDescriptor d;
  d.transport = TransportKind::kUcx;
  // Message mode maps nothing for remote access and hands out no rkey:
  // every byte that reaches the region goes through our checked handler,
  // and no peer (ours or anyone's UCX code) can write into it one-sidedly.
  ucp_mem_h memh = nullptr;
  if (!impl.message_puts) {
    ucp_mem_map_params_t map_params;
    std::memset(&map_params, 0, sizeof(map_params));
    map_params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    map_params.address = base;
    map_params.length = len;
    if (ucs_status_t s = ucp_mem_map(impl.context, &map_params, &memh); s != UCS_OK) {
      return FromUcs(s, "ucp_mem_map");
    }
    void* rkey_buffer = nullptr;
    size_t rkey_size = 0;
    if (ucs_status_t s = ucp_rkey_pack(impl.context, memh, &rkey_buffer, &rkey_size); s != UCS_OK) {
      ucp_mem_unmap(impl.context, memh);
      return FromUcs(s, "ucp_rkey_pack");
    }
    d.rkey.assign(static_cast<const char*>(rkey_buffer), rkey_size);
    ucp_rkey_buffer_release(rkey_buffer);
  }
  auto unmap = [&] {
    if (memh != nullptr) ucp_mem_unmap(impl.context, memh);
  };

  ucp_address_t* address = nullptr;
  size_t address_size = 0;
  if (ucs_status_t s = ucp_worker_get_address(impl.worker, &address, &address_size); s != UCS_OK) {
    unmap();
    return FromUcs(s, "ucp_worker_get_address");
  }
  d.worker_address.assign(reinterpret_cast<const char*>(address), address_size);
  ucp_worker_release_address(impl.worker, address);
  if (d.worker_address.size() > MemoryDescriptor::kMaxFieldBytes ||
      d.rkey.size() > MemoryDescriptor::kMaxFieldBytes) {
    unmap();
    return absl::InternalError("UCX address or rkey larger than the descriptor allows");
  }
  d.base_address = reinterpret_cast<uintptr_t>(base);
  d.length = len;

  impl.registered = true;
  impl.memh = memh;
  impl.base = static_cast<uint8_t*>(base);
  impl.length = len;
  impl.messages.base = impl.base;
  impl.messages.length = len;
  impl.messages.counters = &impl.counters;
  impl.descriptor = d;
  return d;
}

absl::StatusOr<MemoryDescriptor> UcxTransport::local_descriptor() const {
  absl::MutexLock lock(&impl_->mu);
  if (!impl_->registered) return absl::FailedPreconditionError("no memory registered");
  return impl_->descriptor;
}

bool UcxTransport::GuardPuts(KvPutGuard guard) {
  absl::MutexLock lock(&impl_->mu);
  impl_->messages.guard = std::move(guard);
  return impl_->message_puts;
}

absl::StatusOr<std::unique_ptr<TransferSession>> UcxTransport::Connect(const MemoryDescriptor& remote,
                                                                       uint64_t put_token) {
  Impl& impl = *impl_;
  auto fail = [&impl](absl::Status status) { return impl.counters.CountIfFailed(std::move(status)); };
  if (remote.transport != TransportKind::kUcx) {
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "not a UCX descriptor (transport ", TransportKindName(remote.transport), ")")));
  }
  if (remote.worker_address.empty() || remote.length == 0) {
    return fail(absl::InvalidArgumentError("UCX descriptor lacks an address or length"));
  }
  if (!impl.message_puts && remote.rkey.empty()) {
    return fail(absl::InvalidArgumentError(
        "the peer takes only checked message puts (--kv-transport ucx) and gave no rkey for one-sided puts: run "
        "this worker with --kv-transport ucx too"));
  }
  absl::MutexLock lock(&impl.mu);
  if (!impl.registered) {
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
  if (impl.message_puts) {  // no rkey needed (the peer may not even have given one)
    return MakeUcxSession(&impl, std::move(peer), nullptr, remote.base_address, remote.length, put_token);
  }
  auto it = peer->rkeys.find(remote.rkey);
  if (it == peer->rkeys.end()) {
    ucp_rkey_h rkey = nullptr;
    if (ucs_status_t s = ucp_ep_rkey_unpack(peer->ep, remote.rkey.data(), &rkey); s != UCS_OK) {
      return fail(absl::InvalidArgumentError(
          absl::StrCat("cannot unpack the peer's rkey: ", ucs_status_string(s))));
    }
    it = peer->rkeys.emplace(remote.rkey, rkey).first;
  }
  return MakeUcxSession(&impl, std::move(peer), it->second, remote.base_address, remote.length, put_token);
}

size_t UcxTransport::num_cached_peers() const {
  absl::MutexLock lock(&impl_->mu);
  return impl_->peers.size();
}

}  // namespace tandem
