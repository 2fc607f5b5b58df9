// Shared helpers for the AsyncEngine tests (async_engine_*_test.cc, all in
// the async_engine_test binary): an AsyncEngine over the bundled
// tandem-shakespeare model that keeps a pointer to its LlmEngine (readable
// once Stop() joined the loop thread), and thread-safe records of what each
// stream sink and each Reserve / Prefill callback received. Exact counts are
// read on the loop thread (testing::LoopStats). Header-only.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/core/async_engine.h"
#include "engine/core/model_executor.h"
#include "gtest/gtest.h"
#include "tests/testing/engine_test_tools.h"

namespace tandem::async_engine_test {

using testing::WaitUntil;

inline int32_t BlocksFor(size_t tokens) { return static_cast<int32_t>((tokens + 15) / 16); }

// An AsyncEngine and (for reads after Stop(), when no loop thread runs) its engine.
struct Engine {
  LlmEngine* raw = nullptr;
  std::unique_ptr<AsyncEngine> async;
};

inline Engine MakeEngine(int64_t num_blocks = 64, std::chrono::milliseconds grace = std::chrono::milliseconds(0),
                         AsyncEngine::LeaseClock clock = nullptr) {
  Engine e;
  absl::StatusOr<std::unique_ptr<ModelExecutor>> model = LoadExecutor(testing::BundledModelDir(), 1);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return e;
  absl::StatusOr<std::unique_ptr<LlmEngine>> engine =
      LlmEngine::Create(*std::move(model), testing::WorkerEngineConfig(num_blocks));
  EXPECT_TRUE(engine.ok()) << engine.status();
  if (!engine.ok()) return e;
  e.raw = engine->get();
  e.async = std::make_unique<AsyncEngine>(*std::move(engine), nullptr, grace, std::move(clock));
  return e;
}

// Every event each stream (by key) received.
class Streams {
 public:
  struct Stream {
    std::vector<int32_t> tokens;
    int events = 0;
    int finished = 0;
    FinishReason reason = FinishReason::kNone;
    std::vector<absl::Status> errors;
    int events_after_end = 0;
    bool ended() const { return finished > 0 || !errors.empty(); }
  };

  StreamSink Sink(const std::string& key) {
    return [this, key](const StreamEvent& e) {
      std::lock_guard<std::mutex> lock(mu_);
      Stream& s = streams_[key];
      if (s.ended()) ++s.events_after_end;
      ++s.events;
      if (!e.status.ok()) {
        s.errors.push_back(e.status);
      } else {
        s.tokens.insert(s.tokens.end(), e.chunk.new_token_ids.begin(), e.chunk.new_token_ids.end());
        if (e.chunk.finished) {
          ++s.finished;
          s.reason = e.chunk.finish_reason;
        }
      }
    };
  }
  Stream Get(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    return streams_[key];
  }
  bool WaitEnded(const std::vector<std::string>& keys) {
    return WaitUntil([&] {
      std::lock_guard<std::mutex> lock(mu_);
      for (const std::string& k : keys) {
        if (!streams_[k].ended()) return false;
      }
      return true;
    });
  }
  bool WaitEvents(const std::string& key, int n) {
    return WaitUntil([&] {
      std::lock_guard<std::mutex> lock(mu_);
      return streams_[key].events >= n;
    });
  }

 private:
  std::mutex mu_;
  std::map<std::string, Stream> streams_;
};

// A ReserveDone / PrefillDone result, kept for the test thread.
template <typename T>
class Answer {
 public:
  std::function<void(absl::StatusOr<T>)> Callback() {
    return [this](absl::StatusOr<T> v) {
      std::lock_guard<std::mutex> lock(mu_);
      ++calls_;
      value_ = std::move(v);
    };
  }
  bool Wait() {
    return WaitUntil([this] {
      std::lock_guard<std::mutex> lock(mu_);
      return calls_ > 0;
    });
  }
  absl::StatusOr<T> value() {
    std::lock_guard<std::mutex> lock(mu_);
    return value_;
  }
  int calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  std::mutex mu_;
  int calls_ = 0;
  absl::StatusOr<T> value_ = absl::UnknownError("not answered");
};

inline void ExpectIdle(AsyncEngine& engine, int32_t num_blocks) {
  const EngineStats s = testing::WaitIdle(engine);
  EXPECT_TRUE(testing::Idle(s)) << testing::Describe(s);
  EXPECT_EQ(s.kv.num_blocks, num_blocks);
  EXPECT_EQ(s.kv.num_free_blocks, num_blocks);
}

}  // namespace tandem::async_engine_test
