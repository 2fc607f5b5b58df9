// ClusterBackend, recovery: what the router does when a decode worker
// fails, stalls, forgets a reservation or restarts (see cluster_backend.h):
// token-replay migration, the lease renewer's beat (renewals, the stall
// detector, the held queue's probe; Tick), and the pool's gone listener.
#include <algorithm>
#include <condition_variable>
#include <iostream>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "router/cluster_backend.h"
#include "router/cluster_backend_call.h"

namespace tandem {

// A Tick's wait for its Renew answers: how many are outstanding, and what
// they found.
struct ClusterBackend::RenewAnswers {
  std::mutex mu;
  std::condition_variable cv;
  int pending = 0;  // Renew calls not yet answered and acted on
  int lost = 0;     // reservations found lost, and re-admitted or ended
};

void ClusterBackend::RenewLoop() {
  std::unique_lock<std::mutex> lock(renew_mu_);
  while (!renew_cv_.wait_for(lock, options_.lease_renew_interval, [this] { return stopping_; })) {
    lock.unlock();
    // Nothing waits for the answers: a slow worker must not delay the
    // stall check or the other workers' renewals.
    RenewLeases(nullptr);
    CancelStalledStreams();
    // The periodic probe: a decode worker that was full may have room again
    // without any request of ours ending (another router's did, a lease ran
    // out); and the window's budget follows prefill workers coming and going.
    StartQueued(/*decode_room=*/true);
    lock.lock();
  }
}

ClusterBackend::TickReport ClusterBackend::Tick() {
  TickReport report;
  auto answers = std::make_shared<RenewAnswers>();
  report.renewed = RenewLeases(answers);
  {
    // Bounded: each Renew has a deadline, and its callback always signals.
    std::unique_lock<std::mutex> lock(answers->mu);
    answers->cv.wait(lock, [&] { return answers->pending == 0; });
    report.lost = answers->lost;
  }
  report.stalled = CancelStalledStreams();
  StartQueued(/*decode_room=*/true);
  return report;
}

int ClusterBackend::CancelStalledStreams() {
  const auto now = options_.now();
  int stalled = 0;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, call] : calls_) {
    std::lock_guard<std::mutex> call_lock(call->mu);
    if (!call->decode_started || call->ended || call->stalled || !call->decode_ctx) continue;
    if (now - call->decode_activity < options_.decode_idle_timeout) continue;
    call->stalled = true;  // the stream's end (CANCELLED) then reads as a stall and migrates
    call->decode_ctx->TryCancel();
    ++stalled;
  }
  return stalled;
}

int ClusterBackend::RenewLeases(const std::shared_ptr<RenewAnswers>& answers) {
  struct Batch {
    WorkerHandle worker;
    std::vector<std::pair<std::shared_ptr<Call>, std::string>> calls;  // with the attempt renewed
  };
  absl::flat_hash_map<std::string, Batch> by_worker;  // decode worker address -> its reservations
  int renewed = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, call] : calls_) {
      std::lock_guard<std::mutex> call_lock(call->mu);
      if (!call->reserved || call->decode_started || call->ended || !call->decode_worker) continue;
      Batch& b = by_worker[call->decode_worker->address];
      b.worker = *call->decode_worker;
      b.calls.emplace_back(call, call->attempt_id);
      ++renewed;
    }
  }
  if (answers) {
    std::lock_guard<std::mutex> lock(answers->mu);
    answers->pending = static_cast<int>(by_worker.size());
  }
  for (auto& [address, batch] : by_worker) {
    struct Rpc {
      grpc::ClientContext ctx;
      v1::RenewRequest req;
      v1::RenewResponse resp;
      std::vector<std::pair<std::shared_ptr<Call>, std::string>> calls;
      std::chrono::steady_clock::time_point sent;
    };
    auto rpc = std::make_shared<Rpc>();
    rpc->sent = options_.now();
    rpc->ctx.set_deadline(std::chrono::system_clock::now() + std::max(options_.lease_renew_interval * 2,
                                                                      std::chrono::milliseconds(2000)));
    for (const auto& [call, attempt] : batch.calls) rpc->req.add_request_ids(attempt);
    rpc->calls = std::move(batch.calls);
    CallbackStarted();
    batch.worker.decode->async()->Renew(&rpc->ctx, &rpc->req, &rpc->resp, [this, rpc, answers](grpc::Status s) {
      // A failed Renew changes nothing: the next round tries again, and a
      // worker that is gone fails the request's own calls (or its new
      // incarnation's registration re-admits them).
      int lost = 0;
      if (s.ok()) {
        // Every reservation not answered unknown holds its lease from when
        // this Renew was sent (the worker renewed it on receipt, later).
        absl::flat_hash_set<std::string> unknown_ids(rpc->resp.unknown_request_ids().begin(),
                                                     rpc->resp.unknown_request_ids().end());
        for (const auto& [call, attempt] : rpc->calls) {
          if (unknown_ids.contains(attempt)) continue;
          std::lock_guard<std::mutex> lock(call->mu);
          if (call->attempt_id == attempt) call->lease_confirmed = std::max(call->lease_confirmed, rpc->sent);
        }
        for (const std::string& unknown : rpc->resp.unknown_request_ids()) {
          for (const auto& [call, attempt] : rpc->calls) {
            if (attempt != unknown) continue;
            // Re-admitted elsewhere (a migration, within max_migrations), unless
            // it moved on since the Renew was sent: activated, its KV arrived,
            // ended, or another attempt (ReadmitLost checks under its lock).
            if (ReadmitLost(call, attempt,
                            absl::NotFoundError("the decode worker lost the request's KV reservation (its lease "
                                                "expired or the worker restarted)"))) {
              ++lost;
            }
          }
        }
      }
      if (answers) {
        std::lock_guard<std::mutex> lock(answers->mu);
        answers->lost += lost;
        --answers->pending;
        answers->cv.notify_all();
      }
      CallbackDone();
    });
  }
  return renewed;
}

ClusterBackend::MigrateResult ClusterBackend::Migrate(const std::shared_ptr<Call>& call, const absl::Status& why,
                                                     const std::string* lost_attempt) {
  WorkerHandle failed;
  int64_t tokens;
  {
    std::lock_guard<std::mutex> lock(call->mu);
    // Our own cancellation (End) or the client's is not a failure to absorb.
    if (call->ended || call->cancelled || why.code() == absl::StatusCode::kCancelled) return MigrateResult::kDeclined;
    if (lost_attempt != nullptr &&
        (call->attempt_id != *lost_attempt || !call->reserved || call->prefilled || call->decode_started)) {
      // Not the reservation that was lost any more: re-admitted already, or
      // its KV arrived (its Decode stream finds out for itself).
      return MigrateResult::kMovedOn;
    }
    // (Before the first token, `emitted` is empty: the request simply starts
    // again on another decode worker.)
    if (call->migrations >= options_.max_migrations || !call->decode_worker) return MigrateResult::kDeclined;
    const int64_t max_tokens = call->admit_req.sampling().max_tokens();
    if (static_cast<int64_t>(call->emitted.size()) >= max_tokens) return MigrateResult::kDeclined;
    ++call->migrations;
    failed = *call->decode_worker;
    // Whatever the failed worker still holds for us goes (Release is
    // idempotent there; a dead worker simply never answers). A lost
    // reservation is nothing to release, and its worker may be gone.
    if (lost_attempt == nullptr) ReleaseDecode(call);
    // A Prefill still shipping into the lost reservation is of no use: its
    // answer is ignored (see Prefill), and the prefill worker stops.
    call->StartNewAttempt();
    call->admit_req.clear_replayed_token_ids();
    for (int32_t t : call->emitted) call->admit_req.add_replayed_token_ids(static_cast<uint32_t>(t));
    tokens = call->admission_tokens =
        call->admit_req.prompt_token_ids_size() + call->admit_req.replayed_token_ids_size();
  }
  pool_->Done(v1::WORKER_ROLE_DECODE, failed);
  // One line per migration (bounded: max_migrations per request): an
  // operator's only trace of a worker failing under a request.
  std::cerr << "tandem-router: migrating request '" << call->id << "' away from decode worker " << failed.id << ": "
            << why << "\n";
  // NOT_FOUND: the worker is alive but lost the reservation (its lease ran
  // out); anything else says the worker itself failed: avoid it for a while.
  // (A replaced incarnation's handle marks nothing: the pool moved on.)
  if (why.code() != absl::StatusCode::kNotFound) pool_->MarkFailed(v1::WORKER_ROLE_DECODE, failed);
  if (options_.on_migration) options_.on_migration();
  {
    // Through admission like any request (its prefill is prompt + replayed
    // tokens of work), at its arrival place, so it goes before newer ones.
    std::lock_guard<std::mutex> lock(mu_);
    std::lock_guard<std::mutex> call_lock(call->mu);
    if (!call->ended) {  // else its End forgets it
      window_.Requeue(call->seq, tokens, /*bounded=*/false);
      queued_[call->seq] = call;
    }
  }
  StartQueued(/*decode_room=*/false);
  return MigrateResult::kMigrated;
}

bool ClusterBackend::Park(const std::shared_ptr<Call>& call, const absl::Status& why) {
  std::optional<WorkerHandle> release;
  int64_t tokens;
  {
    std::lock_guard<std::mutex> lock(call->mu);
    if (call->ended || call->cancelled || call->emitted.empty()) return false;
    const auto now = options_.now();
    if (!call->stranded_since) {
      call->stranded_since = now;
    } else if (now - *call->stranded_since >= options_.migration_patience) {
      return false;
    }
    if (call->decode_worker) {  // a reservation waiting for a prefill that found no worker
      if (call->reserved && !call->decode_released) ReleaseDecode(call);
      release = *call->decode_worker;
    }
    call->StartNewAttempt();
    tokens = call->admission_tokens;
  }
  if (release) pool_->Done(v1::WORKER_ROLE_DECODE, *release);
  std::cerr << "tandem-router: request '" << call->id << "' waits for a worker to continue it: " << why << "\n";
  {
    // Back to its place in the queue, which holds until the next beat (or a
    // request ends): no tight loop of Admits against failing workers.
    std::lock_guard<std::mutex> lock(mu_);
    std::lock_guard<std::mutex> call_lock(call->mu);
    if (!call->ended) {  // else its End forgets it
      window_.Requeue(call->seq, tokens, /*bounded=*/false);
      queued_[call->seq] = call;
      window_.DecodeFull();
    }
  }
  return true;
}

bool ClusterBackend::ReadmitLost(const std::shared_ptr<Call>& call, const std::string& attempt,
                                 const absl::Status& why) {
  switch (Migrate(call, why, &attempt)) {
    case MigrateResult::kMigrated: return true;
    case MigrateResult::kMovedOn: return false;
    case MigrateResult::kDeclined: break;
  }
  End(call, absl::UnavailableError(absl::StrCat(why.message(), "; retry")));
  return true;
}

void ClusterBackend::DecodeWorkerGone(const WorkerHandle& old) {
  std::vector<std::pair<std::shared_ptr<Call>, std::string>> lost;  // with the attempt that was there
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, call] : calls_) {
      std::lock_guard<std::mutex> call_lock(call->mu);
      // Reservations still waiting for their KV. A Decode stream there
      // fails by itself (and migrates); an Admit in flight there fails too,
      // or reached the new process through the old address, which is fine.
      if (call->ended || !call->reserved || call->prefilled || call->decode_started || !call->decode_worker ||
          call->decode_worker->id != old.id || call->decode_worker->generation != old.generation) {
        continue;
      }
      lost.emplace_back(call, call->attempt_id);
    }
  }
  const absl::Status why = absl::UnavailableError(absl::StrCat(
      "decode worker ", old.id, " restarted (a new incarnation registered), losing the request's KV reservation"));
  for (const auto& [call, attempt] : lost) ReadmitLost(call, attempt, why);
}

}  // namespace tandem
