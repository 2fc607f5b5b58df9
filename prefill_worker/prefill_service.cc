#include "prefill_worker/prefill_service.h"

#include <chrono>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/grpc/status.h"
#include "worker/worker_stats.h"
#include "wire/worker_protocol.h"

namespace tandem {
namespace {

// A failed KV transfer says the destination (the decode worker) failed, not
// this worker: it reaches the router as ABORTED, which re-admits the request
// on another decode worker instead of avoiding this prefill worker. A
// malformed destination (INVALID_ARGUMENT) and a cancelled call keep their
// codes.
absl::Status DestinationFailure(const absl::Status& st) {
  if (st.ok() || absl::IsInvalidArgument(st) || absl::IsCancelled(st)) return st;
  return absl::AbortedError(absl::StrCat("KV transfer to the decode worker failed: ", st.message()));
}

// A unary reactor that stops the engine's work when the caller gives up
// (router cancel or deadline), so abandoned prompts neither compute nor ship.
// It holds the call's drain ticket (may be null) until the call is done.
class PrefillReactor final : public grpc::ServerUnaryReactor {
 public:
  PrefillReactor(AsyncEngine* engine, std::string id, std::shared_ptr<DrainGate::Ticket> ticket)
      : engine_(engine), id_(std::move(id)), ticket_(std::move(ticket)) {}
  void OnCancel() override { engine_->Cancel(id_); }
  void OnDone() override { delete this; }

 private:
  AsyncEngine* const engine_;
  const std::string id_;
  const std::shared_ptr<DrainGate::Ticket> ticket_;
};

}  // namespace

grpc::ServerUnaryReactor* PrefillService::Prefill(grpc::CallbackServerContext* ctx, const v1::PrefillRequest* req,
                                                  v1::PrefillResponse* resp) {
  if (grpc::Status st = tls_->CheckPeer(*ctx, {tls::ClusterRole::kRouter}, "Prefill"); !st.ok()) {
    grpc::ServerUnaryReactor* refused = ctx->DefaultReactor();
    refused->Finish(st);
    return refused;
  }
  std::shared_ptr<DrainGate::Ticket> ticket;
  if (gate_ != nullptr && (ticket = gate_->Enter()) == nullptr) {
    grpc::ServerUnaryReactor* refused = ctx->DefaultReactor();
    refused->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "prefill worker is draining (shutting down)"));
    return refused;
  }
  EngineRequest r;
  // A retried prefill of the same request must not collide with a leftover.
  r.request_id = absl::StrCat(req->request_id(), "@", next_id_.fetch_add(1));
  r.prompt_token_ids.assign(req->prompt_token_ids().begin(), req->prompt_token_ids().end());
  r.sampling = FromProto(req->sampling());
  const std::string id = r.request_id;
  grpc::ServerUnaryReactor* reactor = new PrefillReactor(engine_, id, std::move(ticket));
  // Connect before computing, so each layer can ship as soon as it is written.
  // A cancelled call (router gave up, deadline) and a call past its
  // destination's lease must not write into blocks the decode worker may
  // already have handed to someone else.
  std::optional<std::chrono::steady_clock::time_point> ship_by;
  if (req->ship_within_ms() > 0) {
    ship_by = std::chrono::steady_clock::now() + std::chrono::milliseconds(req->ship_within_ms());
  }
  auto halted = [ctx, ship_by]() -> absl::Status {
    if (ctx->IsCancelled()) return absl::CancelledError("prefill cancelled: KV not shipped");
    if (ship_by && std::chrono::steady_clock::now() > *ship_by) {
      return absl::AbortedError("the destination's lease may have run out before the prompt was computed: KV not "
                                "shipped");
    }
    return absl::OkStatus();
  };
  if (absl::Status st = shipper_->Expect(id, req->destination(), halted); !st.ok()) {
    reactor->Finish(ToGrpcStatus(DestinationFailure(st)));
    return reactor;
  }
  AsyncEngine* engine = engine_;
  LayerShipper* shipper = shipper_;
  KvSender* sender = sender_;
  std::atomic<uint64_t>* bytes_sent = &bytes_sent_;
  auto finish = [engine, bytes_sent, reactor, resp, id](absl::StatusOr<SendResult> sent) {
    engine->ReleasePrefilled(id);  // the KV now lives at the decode worker (or failed)
    if (!sent.ok()) {
      reactor->Finish(ToGrpcStatus(DestinationFailure(sent.status())));
      return;
    }
    bytes_sent->fetch_add(sent->bytes);
    resp->set_kv_bytes_sent(sent->bytes);
    resp->set_num_blocks_sent(sent->num_blocks);
    reactor->Finish(grpc::Status::OK);
  };
  engine_->Prefill(std::move(r), [shipper, sender, reactor, resp, id, untimed_finish = finish, halted,
                                  observe = observe_transfer_,
                                  dest = req->destination()](absl::StatusOr<AsyncEngine::Prefilled> p) mutable {
    // What is left of the transfer once the first token exists: the flush
    // (layers were posted during the step) or the whole transfer.
    const auto sampled = std::chrono::steady_clock::now();
    auto finish = [untimed_finish, observe, sampled](absl::StatusOr<SendResult> sent) {
      if (sent.ok() && observe) {
        observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - sampled).count());
      }
      untimed_finish(std::move(sent));
    };
    LayerShipper::Shipment shipment = shipper->Take(id);
    if (!p.ok()) {
      reactor->Finish(ToGrpcStatus(p.status()));
      return;
    }
    if (absl::Status st = halted(); !st.ok()) {
      finish(std::move(st));
      return;
    }
    ToProto(p->first_token, resp->mutable_first_logprobs());
    resp->set_first_token_id(static_cast<uint32_t>(p->first_token.token_id));
    if (!shipment.shipped) {
      // Not posted during the step (no shipper entry): ship every layer now.
      sender->Send(std::move(p->blocks), std::move(dest), finish);
    } else if (!shipment.status.ok()) {
      finish(shipment.status);
    } else {
      sender->Flush(std::move(shipment.transfer), shipment.num_blocks, finish);
    }
  });
  return reactor;
}

grpc::ServerUnaryReactor* PrefillService::Stats(grpc::CallbackServerContext* ctx, const v1::StatsRequest*,
                                                v1::WorkerStats* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  const grpc::Status st = tls_->CheckPeer(
      *ctx, {tls::ClusterRole::kRouter, tls::ClusterRole::kPrefillWorker, tls::ClusterRole::kDecodeWorker}, "Stats");
  if (st.ok()) {
    resp->set_worker_id(worker_id_);
    resp->set_role(v1::WORKER_ROLE_PREFILL);
    FillWorkerStats(engine_->Stats(), resp);
    resp->set_kv_transfer_bytes_total(bytes_sent_.load());
  }
  reactor->Finish(st);
  return reactor;
}

}  // namespace tandem
