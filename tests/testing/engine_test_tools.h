// Test helpers for code that runs on an AsyncEngine's loop thread: exact
// stats read on that thread, bounded waits, and ways to hold the loop so a
// request stays "in flight" deterministically (no sleeps, no timing
// thresholds). The engines run the bundled tandem-shakespeare model.
//
// LoopStats() reads an engine's stats on its loop thread after every command
// queued before it; LoopPause holds the loop thread inside a command, so
// later commands queue up and no step runs; StepGate holds the loop right
// after the N-th step that computed a sequence, before that step's outputs
// reach any stream. Every wait is bounded by kHangGuard, so a bug fails a
// test rather than hanging it. Header-only; for tests.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/core/async_engine.h"
#include "engine/core/llm_engine.h"
#include "engine/core/model_executor.h"
#include "tests/testing/engine_driver.h"

namespace tandem::testing {

// The bound of every wait in these tests: long enough for a loaded 2-core
// machine, only ever reached when something hangs.
inline constexpr std::chrono::seconds kHangGuard{30};

inline std::filesystem::path BundledModelDir() {
  const char* src = std::getenv("TANDEM_SOURCE_DIR");
  return std::filesystem::path(src ? src : ".") / "models" / "tandem-shakespeare";
}

// A worker engine's configuration: `num_blocks` blocks of 16 tokens, f32.
inline EngineConfig WorkerEngineConfig(int64_t num_blocks = 64, uint64_t seed = 7) {
  EngineConfig c;
  c.num_kv_blocks = num_blocks;
  c.seed = seed;
  return c;
}

inline std::chrono::system_clock::time_point Deadline(std::chrono::milliseconds d = kHangGuard) {
  return std::chrono::system_clock::now() + d;
}

// Polls `pred` until it holds or `timeout` passes; returns its last value.
inline bool WaitUntil(const std::function<bool()>& pred, std::chrono::milliseconds timeout = kHangGuard) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// The engine's stats read on its loop thread, after every command queued
// before this call was applied (exact, unlike the per-step snapshot).
inline EngineStats LoopStats(AsyncEngine& engine) {
  EngineStats s;
  engine.RunOnLoop([&s](LlmEngine& e) { s = e.Stats(); });
  return s;
}

// Nothing running, waiting, prefilled or awaiting KV, every block free.
inline bool Idle(const EngineStats& s) {
  return s.num_running == 0 && s.num_waiting == 0 && s.num_awaiting_kv == 0 && s.num_prefilled == 0 &&
         s.kv.num_used_blocks == 0 && s.kv.num_free_blocks == s.kv.num_blocks;
}

inline std::string Describe(const EngineStats& s) {
  return absl::StrCat("running ", s.num_running, " waiting ", s.num_waiting, " awaiting_kv ", s.num_awaiting_kv,
                      " prefilled ", s.num_prefilled, " used ", s.kv.num_used_blocks, " free ", s.kv.num_free_blocks,
                      " of ", s.kv.num_blocks);
}

// Waits until the engine is Idle(); returns the last exact stats.
inline EngineStats WaitIdle(AsyncEngine& engine) {
  EngineStats s;
  WaitUntil([&] { return Idle(s = LoopStats(engine)); });
  return s;
}

// Holds `engine`'s loop thread inside a RunOnLoop command from construction
// until Resume() (or destruction): commands queue up behind it, no step runs.
class LoopPause {
 public:
  explicit LoopPause(AsyncEngine* engine) {
    std::promise<void> entered;
    std::future<void> entered_f = entered.get_future();
    thread_ = std::thread([this, engine, entered = std::move(entered)]() mutable {
      engine->RunOnLoop([&](LlmEngine&) {
        entered.set_value();
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, kHangGuard, [this] { return resumed_; });
      });
    });
    paused_ = entered_f.wait_for(kHangGuard) == std::future_status::ready;
  }
  ~LoopPause() { Resume(); }
  LoopPause(const LoopPause&) = delete;
  LoopPause& operator=(const LoopPause&) = delete;

  bool paused() const { return paused_; }
  void Resume() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      resumed_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool resumed_ = false;
  bool paused_ = false;
  std::thread thread_;
};

// Installed as an engine's step listener: once Arm(n)ed, the n-th later step
// that computed at least one sequence holds the loop thread (after the step,
// before its outputs reach any stream) until Release().
class StepGate {
 public:
  explicit StepGate(AsyncEngine* engine) : state_(std::make_shared<State>()) {
    engine->SetStepListener([s = state_](const StepReport& r) {
      std::unique_lock<std::mutex> lock(s->mu);
      if (s->remaining <= 0 || r.num_seqs == 0) return;
      if (--s->remaining > 0) return;
      s->held = true;
      s->cv.notify_all();
      s->cv.wait_for(lock, kHangGuard, [&] { return s->released; });
      s->held = false;
    });
  }
  StepGate(const StepGate&) = delete;
  StepGate& operator=(const StepGate&) = delete;

  void Arm(int nth_step) {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->remaining = nth_step;
    state_->released = false;
  }
  // Waits until the loop is held; false after kHangGuard.
  bool WaitHeld() {
    std::unique_lock<std::mutex> lock(state_->mu);
    return state_->cv.wait_for(lock, kHangGuard, [&] { return state_->held; });
  }
  void Release() {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->released = true;
      state_->remaining = 0;
    }
    state_->cv.notify_all();
  }

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    int remaining = 0;
    bool held = false;
    bool released = false;
  };
  std::shared_ptr<State> state_;
};

// A prompt of `n` ordinary token ids (deterministic, no special ids).
inline std::vector<int32_t> TestPrompt(int n, int salt = 0) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back(100 + (i * 37 + salt * 101) % 1900);
  return p;
}

// The tokens the same engine configuration gives when it runs `requests`
// directly (one LlmEngine, no workers, no transport), by request id.
inline absl::StatusOr<std::map<std::string, std::vector<int32_t>>> DirectTokens(
    const std::vector<EngineRequest>& requests, const EngineConfig& config = WorkerEngineConfig(256)) {
  ASSIGN_OR_RETURN(std::unique_ptr<ModelExecutor> model, LoadExecutor(BundledModelDir(), 1, config.precision, config.quantization));
  ASSIGN_OR_RETURN(std::unique_ptr<LlmEngine> engine, LlmEngine::Create(std::move(model), config));
  for (const EngineRequest& r : requests) RETURN_IF_ERROR(engine->AddRequest(r));
  std::map<std::string, std::vector<int32_t>> out;
  for (int step = 0; engine->HasUnfinishedRequests(); ++step) {
    if (step > 10000) return absl::DeadlineExceededError("direct engine did not finish");
    ASSIGN_OR_RETURN(std::vector<RequestOutput> outs, engine->Step());
    for (const RequestOutput& o : outs) {
      auto& t = out[o.request_id];
      t.insert(t.end(), o.new_token_ids.begin(), o.new_token_ids.end());
    }
  }
  return out;
}

}  // namespace tandem::testing
