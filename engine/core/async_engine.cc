#include "engine/core/async_engine.h"

#include <future>

#include "absl/strings/str_cat.h"

namespace tandem {

AsyncEngine::AsyncEngine(std::unique_ptr<LlmEngine> engine, const Tokenizer* tokenizer,
                         std::chrono::milliseconds release_grace, LeaseClock now)
    : engine_(std::move(engine)),
      model_config_(engine_->model_config()),
      processor_(tokenizer),
      release_grace_(release_grace),
      now_(now ? std::move(now) : LeaseClock(&std::chrono::steady_clock::now)),
      stats_(engine_->Stats()),  // valid before the first step
      thread_([this] { Loop(); }) {}

AsyncEngine::~AsyncEngine() { Stop(); }

void AsyncEngine::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool AsyncEngine::Enqueue(Command c) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return false;  // the loop is gone
    commands_.push_back(std::move(c));
  }
  wake_.notify_one();
  return true;
}

void AsyncEngine::Submit(EngineRequest request, std::vector<std::string> stop_strings, StreamSink sink) {
  Command c;
  c.kind = Command::kAdd;
  c.request = std::move(request);
  c.stop_strings = std::move(stop_strings);
  c.sink = std::move(sink);
  Enqueue(std::move(c));
}

void AsyncEngine::Cancel(const std::string& request_id) {
  Command c;
  c.kind = Command::kCancel;
  c.request.request_id = request_id;
  Enqueue(std::move(c));
}

void AsyncEngine::Reserve(EngineRequest request, std::chrono::milliseconds ttl, ReserveDone done) {
  Command c;
  c.kind = Command::kReserve;
  c.request = std::move(request);
  c.timeout = ttl;
  c.reserve_done = std::move(done);
  Enqueue(std::move(c));
}

void AsyncEngine::Renew(std::vector<std::string> request_ids, RenewDone done) {
  Command c;
  c.kind = Command::kRenew;
  c.ids = std::move(request_ids);
  c.renew_done = std::move(done);
  if (!Enqueue(c)) c.renew_done(std::move(c.ids));  // stopped: nothing is held any more
}

void AsyncEngine::Activate(const std::string& request_id, int32_t first_token, StreamSink sink) {
  Command c;
  c.kind = Command::kActivate;
  c.request.request_id = request_id;
  c.first_token = first_token;
  c.sink = std::move(sink);
  Enqueue(std::move(c));
}

void AsyncEngine::Prefill(EngineRequest request, PrefillDone done) {
  Command c;
  c.kind = Command::kPrefill;
  c.request = std::move(request);
  c.request.prefill_only = true;
  c.prefill_done = std::move(done);
  Enqueue(std::move(c));
}

void AsyncEngine::ReleasePrefilled(const std::string& request_id) {
  Command c;
  c.kind = Command::kReleasePrefilled;
  c.request.request_id = request_id;
  Enqueue(std::move(c));
}

void AsyncEngine::RunOnLoop(std::function<void(LlmEngine&)> fn) {
  std::promise<void> ran;
  Command c;
  c.kind = Command::kRun;
  c.run = [&](LlmEngine& e) {
    fn(e);
    ran.set_value();
  };
  if (Enqueue(std::move(c))) ran.get_future().wait();
}

absl::Status AsyncEngine::WarmUp() {
  absl::Status status = absl::CancelledError("engine stopped before the warm-up");
  RunOnLoop([&status](LlmEngine& e) { status = e.WarmUp(); });
  return status;
}

void AsyncEngine::SetStepListener(StepListener listener) {
  RunOnLoop([this, &listener](LlmEngine&) { step_listener_ = std::move(listener); });
}

void AsyncEngine::SetReservationEndListener(ReservationEndListener listener) {
  RunOnLoop([this, &listener](LlmEngine&) { reservation_end_listener_ = std::move(listener); });
}

void AsyncEngine::EndLease(const std::string& id) {
  auto it = reservations_.find(id);
  if (it == reservations_.end()) return;
  const std::vector<BlockId> blocks = std::move(it->second.blocks);
  reservations_.erase(it);
  if (reservation_end_listener_) reservation_end_listener_(blocks);
}

EngineStats AsyncEngine::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void AsyncEngine::Apply(Command& c) {
  const std::string id = c.request.request_id;
  switch (c.kind) {
    case Command::kCancel:
      if (quarantined_.contains(id)) return;  // already released; the grace runs
      if (reservations_.contains(id)) {
        Quarantine(id);  // not activated: KV may still be in flight towards these blocks
        return;
      }
      // Whatever the request holds (running, waiting, reserved, prefilled) goes.
      if (engine_->Abort(id)) {
        processor_.Remove(id);
        sinks_.erase(id);
        reservations_.erase(id);
        if (auto it = prefill_waiters_.find(id); it != prefill_waiters_.end()) {
          it->second(absl::CancelledError("prefill cancelled"));
          prefill_waiters_.erase(it);
        }
      }
      return;
    case Command::kAdd: {
      const std::vector<int32_t> prompt = c.request.prompt_token_ids;
      if (absl::Status st = engine_->AddRequest(std::move(c.request)); !st.ok()) {
        c.sink(StreamEvent{st, {}});
        return;
      }
      processor_.Add(id, prompt, std::move(c.stop_strings));
      sinks_.emplace(id, std::move(c.sink));
      return;
    }
    case Command::kReserve: {
      absl::StatusOr<std::vector<BlockId>> blocks = engine_->ReserveExternal(std::move(c.request));
      if (blocks.ok()) reservations_[id] = Lease{now_() + c.timeout, c.timeout, *blocks};
      c.reserve_done(std::move(blocks));
      return;
    }
    case Command::kRenew: {
      const auto now = now_();
      std::vector<std::string> unknown;
      for (const std::string& rid : c.ids) {
        auto it = reservations_.find(rid);
        if (it == reservations_.end()) {
          unknown.push_back(rid);
        } else {
          it->second.deadline = now + it->second.ttl;
        }
      }
      c.renew_done(std::move(unknown));
      return;
    }
    case Command::kActivate: {
      if (quarantined_.contains(id)) {
        c.sink(StreamEvent{absl::NotFoundError(absl::StrCat("reservation '", id, "' was released")), {}});
        return;
      }
      EndLease(id);  // its KV is complete: no put may touch these blocks from now on
      RequestOutput first;
      if (absl::Status st = engine_->ActivateExternal(id, c.first_token, &first); !st.ok()) {
        c.sink(StreamEvent{st, {}});
        return;
      }
      if (first.finished) {  // the first token alone ended it (eos, stop id, max_tokens 1)
        TextOutput t;
        t.request_id = id;
        t.finished = true;
        t.finish_reason = first.finish_reason;
        c.sink(StreamEvent{absl::OkStatus(), std::move(t)});
        return;
      }
      processor_.Add(id, {}, {});
      sinks_.emplace(id, std::move(c.sink));
      return;
    }
    case Command::kPrefill: {
      if (absl::Status st = engine_->AddRequest(std::move(c.request)); !st.ok()) {
        c.prefill_done(st);
        return;
      }
      prefill_waiters_.emplace(id, std::move(c.prefill_done));
      return;
    }
    case Command::kReleasePrefilled:
      (void)engine_->ReleasePrefilled(id);  // NotFound when cancelled meanwhile
      return;
    case Command::kRun:
      c.run(*engine_);
      return;
  }
}

void AsyncEngine::Quarantine(const std::string& id) {
  EndLease(id);
  if (release_grace_.count() > 0) {
    quarantined_[id] = now_() + release_grace_;
  } else {
    engine_->Abort(id);
  }
}

void AsyncEngine::ExpireReservations() {
  const auto now = now_();
  std::vector<std::string> expired;
  for (const auto& [id, lease] : reservations_) {
    if (lease.deadline <= now) expired.push_back(id);
  }
  // An expired lease is treated as a release: a prefill its router started
  // may still be writing into these blocks, so they wait out the grace too.
  for (const std::string& id : expired) Quarantine(id);
  for (auto it = quarantined_.begin(); it != quarantined_.end();) {
    if (it->second <= now) {
      engine_->Abort(it->first);
      quarantined_.erase(it++);
    } else {
      ++it;
    }
  }
}

void AsyncEngine::Dispatch(const std::vector<RequestOutput>& outs) {
  std::vector<RequestOutput> streamed;
  for (const RequestOutput& o : outs) {
    auto waiter = prefill_waiters_.find(o.request_id);
    if (waiter == prefill_waiters_.end()) {
      streamed.push_back(o);
      continue;
    }
    absl::StatusOr<std::vector<BlockId>> blocks = engine_->PrefilledBlocks(o.request_id);
    if (!blocks.ok() || o.new_samples.empty()) {
      waiter->second(blocks.ok() ? absl::InternalError("prefill produced no token") : blocks.status());
    } else {
      waiter->second(Prefilled{o.new_samples.front(), *std::move(blocks)});
    }
    prefill_waiters_.erase(waiter);
  }
  for (TextOutput& t : processor_.Process(*engine_, streamed)) {
    auto it = sinks_.find(t.request_id);
    if (it == sinks_.end()) continue;
    const bool finished = t.finished;
    it->second(StreamEvent{absl::OkStatus(), std::move(t)});
    if (finished) sinks_.erase(it);
  }
}

void AsyncEngine::Loop() {
  while (true) {
    std::deque<Command> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Sleep only when idle; the timeout bounds every wait (and lets
      // reservations expire on time).
      if (commands_.empty() && !stopping_ && !engine_->HasUnfinishedRequests()) {
        wake_.wait_for(lock, std::chrono::milliseconds(50));
      }
      if (stopping_) break;
      batch.swap(commands_);
    }
    for (Command& c : batch) Apply(c);
    ExpireReservations();
    if (engine_->HasUnfinishedRequests()) {
      const auto step_start = std::chrono::steady_clock::now();
      absl::StatusOr<std::vector<RequestOutput>> outs = engine_->Step();
      const double step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
      if (outs.ok()) {
        if (step_listener_) {
          const EngineStats s = engine_->Stats();
          step_listener_(StepReport{step_seconds, s.last_step_num_seqs, s.last_step_num_tokens,
                                    engine_->last_step_queue_seconds()});
        }
        Dispatch(*outs);
      } else {
        // A model error is a bug or a broken model: fail every stream, free everything.
        for (auto& [id, sink] : sinks_) {
          engine_->Abort(id);
          processor_.Remove(id);
          sink(StreamEvent{outs.status(), {}});
        }
        sinks_.clear();
        for (auto& [id, done] : prefill_waiters_) {
          engine_->Abort(id);
          done(outs.status());
        }
        prefill_waiters_.clear();
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    stats_ = engine_->Stats();
  }
  for (auto& [id, sink] : sinks_) {
    engine_->Abort(id);
    sink(StreamEvent{absl::CancelledError("engine shutting down"), {}});
  }
  sinks_.clear();
  for (auto& [id, done] : prefill_waiters_) done(absl::CancelledError("engine shutting down"));
  prefill_waiters_.clear();
  // Commands queued before the stop still get their answer (nobody waits forever).
  std::deque<Command> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(commands_);
  }
  for (Command& c : left) {
    if (c.kind == Command::kRun) c.run(*engine_);
    if (c.sink) c.sink(StreamEvent{absl::CancelledError("engine shutting down"), {}});
    if (c.reserve_done) c.reserve_done(absl::CancelledError("engine shutting down"));
    if (c.prefill_done) c.prefill_done(absl::CancelledError("engine shutting down"));
    if (c.renew_done) c.renew_done(std::move(c.ids));  // nothing is held any more
  }
}

}  // namespace tandem
