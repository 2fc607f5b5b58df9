#include "decode_worker/decode_service.h"

#include <algorithm>

#include "common/grpc/buffered_write_reactor.h"
#include "decode_worker/admit_request.h"
#include "common/grpc/status.h"
#include "wire/worker_protocol.h"
#include "worker/worker_stats.h"

namespace tandem {
namespace {

v1::FinishReason ToProtoFinish(FinishReason r) {
  switch (r) {
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop: return v1::FINISH_REASON_STOP;
    default: return v1::FINISH_REASON_UNSPECIFIED;
  }
}

}  // namespace

DecodeService::DecodeService(AsyncEngine* engine, std::vector<v1::KvRankRegion> regions,
                             DecodeServiceOptions options, DrainGate* gate)
    : engine_(engine), regions_(std::move(regions)), options_(std::move(options)), gate_(gate) {}

grpc::ServerUnaryReactor* DecodeService::Admit(grpc::CallbackServerContext* ctx, const v1::AdmitRequest* req,
                                               v1::AdmitResponse* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (grpc::Status st = options_.tls->CheckPeer(*ctx, {tls::ClusterRole::kRouter}, "Admit"); !st.ok()) {
    reactor->Finish(st);
    return reactor;
  }
  // Held until the reservation is answered; from then on engine Stats count it.
  std::shared_ptr<DrainGate::Ticket> ticket;
  if (gate_ != nullptr && (ticket = gate_->Enter()) == nullptr) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "decode worker is draining (shutting down)"));
    return reactor;
  }
  EngineRequest r = EngineRequestFromAdmit(*req);
  // The blocks the context spans: those the engine does not hand out are
  // its cached prefix, already held here.
  const int64_t block_size = regions_.empty() ? 0 : regions_[0].layout().block_size();
  const int64_t context_tokens =
      static_cast<int64_t>(r.prompt_token_ids.size()) + std::max<int64_t>(0, std::ssize(r.replayed_token_ids) - 1);
  const int64_t context_blocks = block_size > 0 ? (context_tokens + block_size - 1) / block_size : 0;
  // The reply is written by the engine loop; gRPC keeps `resp` alive until Finish.
  // The destination's fixed part is filled now; the loop thread adds the
  // block ids (it must not touch this service, which may be gone by then).
  v1::KvDestination* d = resp->mutable_destination();
  d->set_worker_id(options_.worker_id);
  d->set_reservation_id(req->request_id());
  for (const v1::KvRankRegion& region : regions_) *d->add_ranks() = region;
  d->set_transport(options_.transport_name);
  const uint64_t token = options_.put_owners != nullptr ? NewPutToken() : KvBlockOwners::kNoToken;
  d->set_put_token(token);
  resp->set_lease_ms(static_cast<uint32_t>(options_.reservation_timeout.count()));
  // Runs on the engine loop, where the reservation's end revokes the grant,
  // so the grant is in place before anyone can know the token and gone
  // before the blocks can be reserved again.
  engine_->Reserve(std::move(r), options_.reservation_timeout,
                   [reactor, d, ticket, token, owners = options_.put_owners, context_blocks](
                       absl::StatusOr<std::vector<BlockId>> blocks) {
                     if (!blocks.ok()) {
                       reactor->Finish(ToGrpcStatus(blocks.status()));
                       return;
                     }
                     // Puts may land only in the blocks to be written: the
                     // cached prefix's are shared with other sequences.
                     if (owners != nullptr) owners->Grant(token, *blocks);
                     d->set_num_cached_blocks(static_cast<uint32_t>(
                         std::max<int64_t>(0, context_blocks - static_cast<int64_t>(blocks->size()))));
                     for (BlockId b : *blocks) d->add_block_ids(static_cast<uint32_t>(b.value()));
                     reactor->Finish(grpc::Status::OK);
                   });
  return reactor;
}

grpc::ServerWriteReactor<v1::DecodeResponse>* DecodeService::Decode(grpc::CallbackServerContext* ctx,
                                                                    const v1::DecodeRequest* req) {
  if (grpc::Status st = options_.tls->CheckPeer(*ctx, {tls::ClusterRole::kRouter}, "Decode"); !st.ok()) {
    auto [refused, stream] = BufferedWriteReactor<v1::DecodeResponse>::Create([] {});
    stream->Close(st);
    return refused;
  }
  AsyncEngine* engine = engine_;
  const std::string id = req->request_id();
  // Continues an admitted request, so it runs even while draining; the
  // reactor owns the ticket (in its cancel callback) until its last write.
  std::shared_ptr<DrainGate::Ticket> ticket = gate_ != nullptr ? gate_->Hold() : nullptr;
  auto [reactor, stream] =
      BufferedWriteReactor<v1::DecodeResponse>::Create([engine, id, ticket] { engine->Cancel(id); });
  engine_->Activate(id, FirstTokenOf(*req), [stream = stream](const StreamEvent& e) {
    if (!e.status.ok()) {
      stream->Close(ToGrpcStatus(e.status));
      return;
    }
    v1::DecodeResponse r;
    for (int32_t t : e.chunk.new_token_ids) r.add_token_ids(static_cast<uint32_t>(t));
    for (const SampledToken& t : e.chunk.new_samples) ToProto(t, r.add_logprobs());
    if (e.chunk.finished) r.set_finish_reason(ToProtoFinish(e.chunk.finish_reason));
    stream->Push(std::move(r));
    if (e.chunk.finished) stream->Close(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* DecodeService::Release(grpc::CallbackServerContext* ctx, const v1::ReleaseRequest* req,
                                                 v1::ReleaseResponse* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  const grpc::Status st = options_.tls->CheckPeer(*ctx, {tls::ClusterRole::kRouter}, "Release");
  if (st.ok()) {
    engine_->Cancel(req->request_id());
    resp->set_released(true);
  }
  reactor->Finish(st);
  return reactor;
}

grpc::ServerUnaryReactor* DecodeService::Renew(grpc::CallbackServerContext* ctx, const v1::RenewRequest* req,
                                               v1::RenewResponse* resp) {
  // Renewals continue admitted requests, so they are answered while draining.
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (grpc::Status st = options_.tls->CheckPeer(*ctx, {tls::ClusterRole::kRouter}, "Renew"); !st.ok()) {
    reactor->Finish(st);
    return reactor;
  }
  std::vector<std::string> ids(req->request_ids().begin(), req->request_ids().end());
  engine_->Renew(std::move(ids), [reactor, resp](std::vector<std::string> unknown) {
    for (std::string& id : unknown) resp->add_unknown_request_ids(std::move(id));
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* DecodeService::Stats(grpc::CallbackServerContext* ctx, const v1::StatsRequest*,
                                               v1::WorkerStats* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  const grpc::Status st = options_.tls->CheckPeer(
      *ctx, {tls::ClusterRole::kRouter, tls::ClusterRole::kPrefillWorker, tls::ClusterRole::kDecodeWorker}, "Stats");
  if (st.ok()) {
    resp->set_worker_id(options_.worker_id);
    resp->set_role(v1::WORKER_ROLE_DECODE);
    FillWorkerStats(engine_->Stats(), resp);
    resp->set_tp_size(static_cast<uint32_t>(regions_.size()));
  }
  reactor->Finish(st);
  return reactor;
}

}  // namespace tandem
