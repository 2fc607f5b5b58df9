// AsyncEngine: runs an LlmEngine on its own loop thread, the only thread that
// touches engine state (STYLE.md 3). Other threads (gRPC reactors) submit and
// cancel requests through a queue and receive each request's text stream
// through a callback.
//
// Loop: drain the command queue (add / cancel) → if anything is unfinished,
// Step() → turn outputs into text (OutputProcessor: incremental detokenize,
// stop strings) → call each request's sink. With nothing to do it sleeps on a
// condition variable; every wait is bounded.
//
// Thread-safety: Submit(), Cancel() and Stats() are thread-safe. Sinks run on
// the loop thread and must not block (they enqueue and return).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "engine/core/llm_engine.h"
#include "engine/core/output_processor.h"
#include "engine/tokenizer/tokenizer.h"

namespace tandem {

// One event of a request's stream: an error (the stream ends), or a chunk
// (the stream ends when chunk.finished).
struct StreamEvent {
  absl::Status status;
  TextOutput chunk;
};

using StreamSink = std::function<void(const StreamEvent&)>;

class AsyncEngine {
 public:
  // `tokenizer` may be null (no text, no stop strings); it must outlive this.
  AsyncEngine(std::unique_ptr<LlmEngine> engine, const Tokenizer* tokenizer);
  // Stops the loop; unfinished requests get a Cancelled event.
  ~AsyncEngine();
  AsyncEngine(const AsyncEngine&) = delete;
  AsyncEngine& operator=(const AsyncEngine&) = delete;

  // Queues `request`; `sink` receives its stream. Errors the engine finds
  // (invalid request, duplicate id) arrive as the stream's only event.
  void Submit(EngineRequest request, std::vector<std::string> stop_strings, StreamSink sink);
  // Ends a request now (client gone); its sink gets no further events.
  void Cancel(const std::string& request_id);

  // A snapshot taken after the latest step.
  EngineStats Stats() const;
  const ModelConfig& model_config() const { return model_config_; }

 private:
  struct Command {
    enum Kind { kAdd, kCancel } kind;
    EngineRequest request;
    std::vector<std::string> stop_strings;
    StreamSink sink;
  };

  void Loop();
  void Apply(Command& c);

  std::unique_ptr<LlmEngine> engine_;  // loop thread only
  const ModelConfig model_config_;
  OutputProcessor processor_;          // loop thread only
  absl::flat_hash_map<std::string, StreamSink> sinks_;  // loop thread only

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Command> commands_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  EngineStats stats_ ABSL_GUARDED_BY(mu_);

  std::thread thread_;  // last: starts after everything above is built
};

}  // namespace tandem
