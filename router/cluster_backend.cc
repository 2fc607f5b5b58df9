#include "router/cluster_backend.h"

#include <optional>
#include <random>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/grpc/status.h"
#include "grpcpp/grpcpp.h"
#include "router/cluster_backend_call.h"
#include "wire/worker_protocol.h"

namespace tandem {
namespace {

std::unique_ptr<grpc::ClientContext> ContextWithTimeout(std::chrono::milliseconds timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  return ctx;
}

}  // namespace

ClusterBackend::ClusterBackend(WorkerPool* pool, const Tokenizer* tokenizer, ModelConfig config,
                               ClusterOptions options)
    : pool_(pool),
      tokenizer_(tokenizer),
      config_(std::move(config)),
      options_(options),
      kv_router_(options.routing),
      window_({options.max_prefill_tokens_per_worker, options.max_queued, options.max_queued_tokens}),
      renewer_(options.lease_renew_interval > std::chrono::milliseconds(0) ? std::thread([this] { RenewLoop(); })
                                                                           : std::thread()) {
  pool_->SetGoneListener([this](v1::WorkerRole role, const WorkerHandle& old) {
    kv_router_.WorkerGone(role, old.id);  // the new process's cache starts empty
    if (role == v1::WORKER_ROLE_DECODE) DecodeWorkerGone(old);  // a prefill's own call fails and is retried
  });
}

ClusterBackend::~ClusterBackend() {
  pool_->SetGoneListener(nullptr);  // waits for a call in progress
  {
    std::lock_guard<std::mutex> lock(renew_mu_);
    stopping_ = true;
  }
  renew_cv_.notify_all();
  if (renewer_.joinable()) renewer_.join();
  std::vector<std::string> ids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutting_down_ = true;  // a cancel below must not start a queued request
    for (const auto& [id, call] : calls_) ids.push_back(id);
  }
  for (const std::string& id : ids) Cancel(id);
  // Callbacks still in flight use this object. Every call was cancelled
  // above except Admits, whose replies say whether a reservation needs a
  // Release; their deadline bounds this wait.
  std::unique_lock<std::mutex> lock(renew_mu_);
  renew_cv_.wait(lock, [this] { return callbacks_in_flight_ == 0; });
}

void ClusterBackend::CallbackStarted() {
  std::lock_guard<std::mutex> lock(renew_mu_);
  ++callbacks_in_flight_;
}

void ClusterBackend::CallbackDone() {
  std::lock_guard<std::mutex> lock(renew_mu_);
  --callbacks_in_flight_;
  renew_cv_.notify_all();
}

int ClusterBackend::num_queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return window_.num_queued();
}

int64_t ClusterBackend::window_tokens() const {
  std::lock_guard<std::mutex> lock(mu_);
  return window_.window_tokens();
}

int64_t ClusterBackend::queued_tokens() const {
  std::lock_guard<std::mutex> lock(mu_);
  return window_.queued_tokens();
}

int ClusterBackend::num_in_window() const {
  std::lock_guard<std::mutex> lock(mu_);
  return window_.num_in_window();
}

int64_t ClusterBackend::window_high_water_tokens() const {
  std::lock_guard<std::mutex> lock(mu_);
  return window_.high_water_tokens();
}

int ClusterBackend::num_in_flight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(calls_.size());
}

void ClusterBackend::Start(const std::string& id, ValidatedRequest request, Sink sink) {
  auto call = std::make_shared<Call>();
  call->id = id;
  call->started = options_.now();
  call->sink = std::move(sink);
  if (tokenizer_ != nullptr) call->detok = std::make_unique<IncrementalDecoder>(*tokenizer_, request.prompt_token_ids);
  call->stops = std::make_unique<StopStringMatcher>(request.stop);
  // One seed for both halves: the decode side continues the prefill's stream.
  const uint64_t seed = request.sampling.seed.value_or(std::random_device{}() ^ (uint64_t{std::random_device{}()} << 32));
  call->attempt_id = id;
  call->admit_req.set_request_id(id);
  for (int32_t t : request.prompt_token_ids) call->admit_req.add_prompt_token_ids(static_cast<uint32_t>(t));
  *call->admit_req.mutable_sampling() = ToProto(request.sampling, seed);
  call->admit_req.set_priority(request.priority);
  call->request = std::move(request);
  call->admission_tokens = call->admit_req.prompt_token_ids_size();
  const int prefill_workers = pool_->NumServing(v1::WORKER_ROLE_PREFILL);
  bool accepted, started = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    call->seq = next_seq_++;
    calls_[id] = call;
    accepted = window_.Arrive(call->seq, call->admission_tokens, prefill_workers, &started);
    if (accepted && !started) queued_[call->seq] = call;
  }
  if (!accepted) {
    End(call, absl::ResourceExhaustedError(absl::StrCat(
                  "the router's queue is full (at most ", options_.max_queued, " requests and ",
                  options_.max_queued_tokens, " tokens wait for a prefill or decode worker); retry later")));
    return;
  }
  if (started) Admit(call);
}

void ClusterBackend::StartQueued(bool decode_room) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (decode_room) window_.DecodeRoom();
    if (starting_) {  // that thread looks again before it stops
      start_again_ = true;
      return;
    }
    starting_ = true;
  }
  // Admit() may end a request (no decode worker), whose End() comes back
  // here: it only sets start_again_, so this loop, not the stack, absorbs it.
  // Bounded: each round starts at least one queued request or stops.
  while (true) {
    const int prefill_workers = pool_->NumServing(v1::WORKER_ROLE_PREFILL);
    std::vector<std::shared_ptr<Call>> start;
    {
      std::lock_guard<std::mutex> lock(mu_);
      start_again_ = false;
      if (!shutting_down_) {
        for (uint64_t seq : window_.Drain(prefill_workers)) {
          auto it = queued_.find(seq);
          start.push_back(std::move(it->second));
          queued_.erase(it);
        }
      }
      if (start.empty() && !start_again_) {
        starting_ = false;
        return;
      }
    }
    for (const std::shared_ptr<Call>& call : start) Admit(call);
  }
}

void ClusterBackend::LeaveWindow(const Call& call) {
  std::lock_guard<std::mutex> lock(mu_);
  window_.Leave(call.seq);
}

void ClusterBackend::Admit(std::shared_ptr<Call> call) {
  std::vector<int32_t> context;  // what the reservation holds: the prompt and the replayed tokens but the last
  {
    std::lock_guard<std::mutex> lock(call->mu);
    context.assign(call->admit_req.prompt_token_ids().begin(), call->admit_req.prompt_token_ids().end());
    const auto& replayed = call->admit_req.replayed_token_ids();
    if (!replayed.empty()) context.insert(context.end(), replayed.begin(), replayed.end() - 1);
  }
  KvRouter::Prompt prompt(std::move(context));
  absl::StatusOr<WorkerHandle> worker =
      pool_->Acquire(v1::WORKER_ROLE_DECODE, {}, kv_router_.ChooserFor(v1::WORKER_ROLE_DECODE, &prompt));
  if (!worker.ok()) {
    if (!Park(call, worker.status())) End(call, worker.status());
    return;
  }
  // This RPC's own context, request and reply, held by its callback (see
  // Call::decode_ctx).
  struct AdmitRpc {
    std::unique_ptr<grpc::ClientContext> ctx;
    v1::AdmitRequest req;
    v1::AdmitResponse resp;
  };
  auto rpc = std::make_shared<AdmitRpc>();
  rpc->ctx = ContextWithTimeout(options_.admit_timeout);
  {
    std::lock_guard<std::mutex> lock(call->mu);
    if (call->ended) {
      pool_->Done(v1::WORKER_ROLE_DECODE, *worker);
      return;
    }
    call->decode_worker = *worker;
    call->admit_sent = options_.now();
    call->admit_in_flight = true;
    rpc->req = call->admit_req;  // a snapshot: the next attempt may rewrite admit_req under the lock
  }
  CallbackStarted();
  worker->decode->async()->Admit(
      rpc->ctx.get(), &rpc->req, &rpc->resp, [this, call, rpc](grpc::Status s) {
        absl::Cleanup done = [this] { CallbackDone(); };
        {
          // A request that ended while its Admit was in flight: the Release
          // is sent only now, after the reservation it would free exists.
          std::lock_guard<std::mutex> lock(call->mu);
          call->admit_in_flight = false;
          if (call->ended) {
            if (!call->decode_released && call->decode_worker) {
              call->decode_released = true;
              if (s.ok()) ReleaseDecode(call);
              pool_->Done(v1::WORKER_ROLE_DECODE, *call->decode_worker);
            }
            return;
          }
        }
        if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
          // Back-pressure (invariant 2): out of the window, back to its place
          // at the front of the queue, which holds until a request ends.
          {
            std::lock_guard<std::mutex> lock(call->mu);
            if (call->ended) return;  // since the check above: its End released the worker
            pool_->Done(v1::WORKER_ROLE_DECODE, *call->decode_worker);
            call->decode_worker.reset();
          }
          bool queued = true;
          {
            std::lock_guard<std::mutex> lock(mu_);
            std::lock_guard<std::mutex> call_lock(call->mu);
            window_.DecodeFull();
            // An ended request is (or is about to be) forgotten by its End.
            if (!call->ended) {
              // A request already streaming (a migration) is no new load: the
              // queue's bounds are for newcomers.
              queued = window_.Requeue(call->seq, call->admission_tokens, /*bounded=*/call->emitted.empty());
              if (queued) queued_[call->seq] = call;
            }
          }
          if (!queued) {
            End(call, absl::ResourceExhaustedError("all decode workers are full and the router's queue is full; "
                                                   "retry later"));
          }
          return;
        }
        if (!s.ok()) {
          WorkerHandle failed;
          {
            std::lock_guard<std::mutex> lock(call->mu);
            if (call->ended) return;  // since the check above: its End released the worker
            failed = *call->decode_worker;
            // Past our deadline the worker may still reserve the blocks: release
            // them now rather than leave them to its reservation timeout.
            if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
              ReleaseDecode(call);
              // The next Admit (maybe on the same worker) is another attempt:
              // this Release must never meet it.
              call->attempt_id = absl::StrCat(call->id, "~", ++call->attempt_no);
              call->admit_req.set_request_id(call->attempt_id);
            }
            pool_->Done(v1::WORKER_ROLE_DECODE, failed);
            call->decode_worker.reset();
          }
          // A dead (UNAVAILABLE) or stalled (no answer in time) decode
          // worker: try another. The admit timeout is ours, not the
          // client's deadline, so the client never sees DEADLINE_EXCEEDED
          // for it.
          const bool worker_failed = s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                                     s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
          if (worker_failed) pool_->MarkFailed(v1::WORKER_ROLE_DECODE, failed);
          if (worker_failed && ++call->admit_attempts < std::max(2, pool_->NumWorkers(v1::WORKER_ROLE_DECODE))) {
            Admit(call);  // another decode worker
            return;
          }
          const absl::Status why =
              worker_failed ? absl::UnavailableError(absl::StrCat("no decode worker admitted the request (last: ",
                                                                  s.error_message(), "); retry"))
                            : FromGrpcStatus(s);
          if (worker_failed && Park(call, why)) return;
          End(call, why);
          return;
        }
        bool first_admit;
        {
          std::lock_guard<std::mutex> lock(call->mu);
          call->destination = rpc->resp.destination();
          call->reserved = true;
          call->lease_ms = rpc->resp.lease_ms();
          call->lease_confirmed = call->admit_sent;
          first_admit = call->migrations == 0;
        }
        if (options_.observe_queue_time && first_admit) {
          options_.observe_queue_time(
              std::chrono::duration<double>(options_.now() - call->started).count());
        }
        Prefill(call);
        {
          std::lock_guard<std::mutex> lock(mu_);
          window_.DecodeAdmitted();  // a decode worker had room: the queue may go on
        }
        StartQueued(/*decode_room=*/false);
      });
}

void ClusterBackend::Prefill(std::shared_ptr<Call> call) {
  std::vector<std::string> tried;
  std::vector<int32_t> context;  // what the prefill computes: the prompt and the emitted tokens but the last
  {
    std::lock_guard<std::mutex> lock(call->mu);
    if (call->ended) return;
    tried = call->tried_prefill;
    context.assign(call->admit_req.prompt_token_ids().begin(), call->admit_req.prompt_token_ids().end());
    if (!call->emitted.empty()) context.insert(context.end(), call->emitted.begin(), call->emitted.end() - 1);
  }
  KvRouter::Prompt prompt(std::move(context));
  absl::StatusOr<WorkerHandle> worker =
      pool_->Acquire(v1::WORKER_ROLE_PREFILL, tried, kv_router_.ChooserFor(v1::WORKER_ROLE_PREFILL, &prompt));
  if (!worker.ok() || static_cast<int>(tried.size()) >= options_.max_prefill_attempts) {
    if (worker.ok()) pool_->Done(v1::WORKER_ROLE_PREFILL, *worker);
    const absl::Status why =
        worker.ok() ? absl::UnavailableError("prefill failed on every worker tried") : worker.status();
    if (!Park(call, why)) End(call, why);
    return;
  }
  auto rpc = std::make_shared<Call::PrefillRpc>();
  rpc->worker = *worker;
  {
    std::lock_guard<std::mutex> lock(call->mu);
    if (call->ended) {
      pool_->Done(v1::WORKER_ROLE_PREFILL, *worker);
      return;
    }
    call->tried_prefill.push_back(worker->id);
    rpc->req.set_request_id(call->attempt_id);
    *rpc->req.mutable_prompt_token_ids() = call->admit_req.prompt_token_ids();
    *rpc->req.mutable_sampling() = call->admit_req.sampling();
    if (!call->emitted.empty()) {
      // A migrated request: the new decode worker needs the KV of the prompt
      // and of everything already sent but the last token. The prefill's own
      // sample is not used (Decode continues from the last token sent), so
      // it draws just one.
      for (size_t i = 0; i + 1 < call->emitted.size(); ++i) {
        rpc->req.add_prompt_token_ids(static_cast<uint32_t>(call->emitted[i]));
      }
      rpc->req.mutable_sampling()->set_max_tokens(1);
    }
    *rpc->req.mutable_destination() = call->destination;
    if (call->lease_ms > 0) {
      // Past what is left of the lease the decode worker may have freed the
      // blocks (had our renewals stopped reaching it), so the prefill worker
      // must not ship after it: it answers ABORTED and we re-admit.
      const auto left = std::chrono::milliseconds(call->lease_ms) -
                        std::chrono::duration_cast<std::chrono::milliseconds>(options_.now() - call->lease_confirmed);
      rpc->req.set_ship_within_ms(static_cast<uint32_t>(std::max<int64_t>(1, left.count())));
    }
    rpc->ctx.set_deadline(std::chrono::system_clock::now() + options_.prefill_timeout);
    call->prefill = rpc;
  }
  CallbackStarted();
  worker->prefill->async()->Prefill(&rpc->ctx, &rpc->req, &rpc->resp, [this, call, rpc](grpc::Status s) {
    absl::Cleanup done = [this] { CallbackDone(); };
    pool_->Done(v1::WORKER_ROLE_PREFILL, rpc->worker);
    {
      std::lock_guard<std::mutex> lock(call->mu);
      // Superseded (its reservation was found lost and the request
      // re-admitted) or ended: whatever this call did is moot.
      if (call->prefill != rpc || call->ended) return;
      call->prefill.reset();
      if (s.ok()) {
        call->prefilled = true;  // from here on only Decode fails this attempt
        call->stranded_since.reset();
      }
    }
    if (s.ok()) {
      // Its prefill is done: room in the window for the next. (Every
      // failure below ends the request or puts it back in the queue,
      // which takes it out of the window too; a retry stays in it.)
      LeaveWindow(*call);
      StartQueued(/*decode_room=*/false);
    }
    if (s.error_code() == grpc::StatusCode::ABORTED) {
      // The KV transfer failed at the destination: the decode worker, not
      // this prefill worker. Start again on another decode worker.
      const absl::Status why = FromGrpcStatus(s);
      if (Migrate(call, why) == MigrateResult::kDeclined) End(call, why);
      return;
    }
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE || s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      pool_->MarkFailed(v1::WORKER_ROLE_PREFILL, rpc->worker);
      Prefill(call);  // another prefill worker, same reservation
      return;
    }
    if (!s.ok()) {
      const absl::Status why = FromGrpcStatus(s);
      if (s.error_code() != grpc::StatusCode::INVALID_ARGUMENT && Park(call, why)) return;
      End(call, why);
      return;
    }
    bool migrated;
    {
      std::lock_guard<std::mutex> lock(call->mu);
      if (call->ended) return;
      migrated = !call->emitted.empty();
    }
    if (migrated) {  // the client has every token up to here already
      Decode(call);
      return;
    }
    // Invariant 4: the first token goes out before decoding starts.
    const int32_t first = static_cast<int32_t>(rpc->resp.first_token_id());
    std::vector<SampledToken> lps;
    if (call->request.sampling.logprobs > 0) lps.push_back(tandem::FromProto(rpc->resp.first_logprobs()));
    bool stopped;
    {
      std::lock_guard<std::mutex> lock(call->mu);
      if (call->ended) return;
      stopped = Emit(*call, {first}, lps, false, ChunkFinish::kNone);
    }
    if (stopped) {
      End(call, absl::OkStatus());
      return;
    }
    Decode(call);
  });
}

void ClusterBackend::ReleaseDecode(const std::shared_ptr<Call>& call) {
  // Only for a reservation the Decode stream does not own (caller holds call->mu).
  auto ctx = std::make_shared<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto req = std::make_shared<v1::ReleaseRequest>();
  req->set_request_id(call->attempt_id);
  auto resp = std::make_shared<v1::ReleaseResponse>();
  call->decode_worker->decode->async()->Release(ctx.get(), req.get(), resp.get(),
                                                [ctx, req, resp](grpc::Status) {});
}

void ClusterBackend::End(const std::shared_ptr<Call>& call, const absl::Status& status) {
  std::optional<WorkerHandle> release_worker;  // its Acquire is undone once the lock is released
  {
    std::lock_guard<std::mutex> lock(call->mu);
    if (call->decode_worker && !call->decode_released && !call->admit_in_flight) {
      call->decode_released = true;
      release_worker = *call->decode_worker;
      // Cancelling a Decode stream frees the sequence on the worker (its
      // OnCancel); but a stream cancelled before it started never reaches
      // the worker, so Release is sent as well (idempotent there).
      if (call->decode_started && call->decode_ctx) call->decode_ctx->TryCancel();
      ReleaseDecode(call);
    }  // with an Admit in flight, its callback releases (see Admit)
    if (!call->ended) {
      call->ended = true;
      if (!status.ok()) call->sink(status, {});
    }
    // An Admit in flight is not cancelled: its reply tells whether a
    // reservation exists to release (its deadline bounds the wait).
    if (call->prefill) call->prefill->ctx.TryCancel();
  }
  if (release_worker) pool_->Done(v1::WORKER_ROLE_DECODE, *release_worker);
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Whichever of the queue and the window holds it (every path ends here,
    // so both token counts stay exact).
    window_.Forget(call->seq);
    queued_.erase(call->seq);
    calls_.erase(call->id);
  }
  // Its decode blocks are free (or soon): a queue held by a full decode
  // worker may try again, and the window may have room.
  StartQueued(/*decode_room=*/true);
}

void ClusterBackend::Cancel(const std::string& id) {
  std::shared_ptr<Call> call;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = calls_.find(id);
    if (it == calls_.end()) return;
    call = it->second;
  }
  {
    std::lock_guard<std::mutex> lock(call->mu);
    call->cancelled = true;
  }
  End(call, absl::CancelledError("cancelled by the client"));
}

}  // namespace tandem
