#include "engine/core/async_engine.h"

#include <chrono>

namespace tandem {

AsyncEngine::AsyncEngine(std::unique_ptr<LlmEngine> engine, const Tokenizer* tokenizer)
    : engine_(std::move(engine)),
      model_config_(engine_->model().config()),
      processor_(tokenizer),
      thread_([this] { Loop(); }) {}

AsyncEngine::~AsyncEngine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void AsyncEngine::Submit(EngineRequest request, std::vector<std::string> stop_strings, StreamSink sink) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    commands_.push_back({Command::kAdd, std::move(request), std::move(stop_strings), std::move(sink)});
  }
  wake_.notify_one();
}

void AsyncEngine::Cancel(const std::string& request_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    EngineRequest r;
    r.request_id = request_id;
    commands_.push_back({Command::kCancel, std::move(r), {}, nullptr});
  }
  wake_.notify_one();
}

EngineStats AsyncEngine::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void AsyncEngine::Apply(Command& c) {
  const std::string id = c.request.request_id;
  if (c.kind == Command::kCancel) {
    if (engine_->Abort(id)) {
      processor_.Remove(id);
      sinks_.erase(id);
    }
    return;
  }
  const std::vector<int32_t> prompt = c.request.prompt_token_ids;
  if (absl::Status st = engine_->AddRequest(std::move(c.request)); !st.ok()) {
    c.sink(StreamEvent{st, {}});
    return;
  }
  processor_.Add(id, prompt, std::move(c.stop_strings));
  sinks_.emplace(id, std::move(c.sink));
}

void AsyncEngine::Loop() {
  while (true) {
    std::deque<Command> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Sleep only when idle; the timeout bounds every wait.
      if (commands_.empty() && !stopping_ && !engine_->HasUnfinishedRequests()) {
        wake_.wait_for(lock, std::chrono::milliseconds(100));
      }
      if (stopping_) break;
      batch.swap(commands_);
    }
    for (Command& c : batch) Apply(c);
    if (!engine_->HasUnfinishedRequests()) continue;

    absl::StatusOr<std::vector<RequestOutput>> outs = engine_->Step();
    if (!outs.ok()) {
      // A model error is a bug or a broken model: fail every stream, free everything.
      for (auto& [id, sink] : sinks_) {
        engine_->Abort(id);
        processor_.Remove(id);
        sink(StreamEvent{outs.status(), {}});
      }
      sinks_.clear();
      continue;
    }
    for (TextOutput& t : processor_.Process(*engine_, *outs)) {
      auto it = sinks_.find(t.request_id);
      if (it == sinks_.end()) continue;
      const bool finished = t.finished;
      it->second(StreamEvent{absl::OkStatus(), std::move(t)});
      if (finished) sinks_.erase(it);
    }
    std::lock_guard<std::mutex> lock(mu_);
    stats_ = engine_->Stats();
  }
  for (auto& [id, sink] : sinks_) {
    engine_->Abort(id);
    sink(StreamEvent{absl::CancelledError("engine shutting down"), {}});
  }
  sinks_.clear();
}

}  // namespace tandem
