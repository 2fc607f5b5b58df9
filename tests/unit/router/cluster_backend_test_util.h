// Shared helpers for the ClusterBackend tests (cluster_backend_*_test.cc, all
// in the cluster_backend_test binary): a cluster in one process (router in
// front of prefill and decode workers, all real gRPC servers on 127.0.0.1,
// KV over the loopback transport; tests/testing/inproc_cluster.h), the
// tokens and text a request must stream (the same engine run directly), and
// a Generate stream read by hand. Header-only.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/inproc_cluster.h"

namespace tandem::cluster_backend_test {

using testing::Deadline;
using testing::InProcDecodeWorker;
using testing::InProcPrefillWorker;
using testing::InProcRouter;
using testing::StreamResult;
using testing::WaitUntil;

struct ClusterSpec {
  int num_prefill = 1;
  int num_decode = 1;
  ClusterOptions router;
  testing::DecodeWorkerOptions decode;
  testing::PrefillWorkerOptions prefill;
  std::vector<std::string> dead_prefill;  // unreachable addresses, listed before the live workers
  std::vector<std::string> dead_decode;
  const ApiKeyAuth* auth = nullptr;  // the public API's keys (null: open)
};

// Workers first, the router in front; torn down router first.
class Cluster {
 public:
  static std::unique_ptr<Cluster> Start(const ClusterSpec& spec) {
    auto c = std::make_unique<Cluster>();
    for (int i = 0; i < spec.num_decode; ++i) {
      testing::DecodeWorkerOptions o = spec.decode;
      o.worker_id = "decode-" + std::to_string(i);
      absl::StatusOr<std::unique_ptr<InProcDecodeWorker>> w = InProcDecodeWorker::Start(o);
      EXPECT_TRUE(w.ok()) << w.status();
      if (!w.ok()) return nullptr;
      c->decode.push_back(*std::move(w));
    }
    for (int i = 0; i < spec.num_prefill; ++i) {
      testing::PrefillWorkerOptions o = spec.prefill;
      o.worker_id = "prefill-" + std::to_string(i);
      absl::StatusOr<std::unique_ptr<InProcPrefillWorker>> w = InProcPrefillWorker::Start(o);
      EXPECT_TRUE(w.ok()) << w.status();
      if (!w.ok()) return nullptr;
      c->prefill.push_back(*std::move(w));
    }
    absl::StatusOr<std::unique_ptr<InProcRouter>> r = InProcRouter::Start(spec.router, spec.auth);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return nullptr;
    c->router = *std::move(r);
    WorkerPool& pool = c->router->pool();
    for (size_t i = 0; i < spec.dead_prefill.size(); ++i) {
      pool.Add(v1::WORKER_ROLE_PREFILL, "dead-prefill-" + std::to_string(i), spec.dead_prefill[i]);
    }
    for (size_t i = 0; i < c->prefill.size(); ++i) {
      pool.Add(v1::WORKER_ROLE_PREFILL, "prefill-" + std::to_string(i), c->prefill[i]->address());
    }
    for (size_t i = 0; i < spec.dead_decode.size(); ++i) {
      pool.Add(v1::WORKER_ROLE_DECODE, "dead-decode-" + std::to_string(i), spec.dead_decode[i]);
    }
    for (size_t i = 0; i < c->decode.size(); ++i) {
      pool.Add(v1::WORKER_ROLE_DECODE, "decode-" + std::to_string(i), c->decode[i]->address());
    }
    return c;
  }

  ~Cluster() {
    router.reset();
    prefill.clear();
    decode.clear();
  }

  // The router holds nothing and every live engine's pool is back to start.
  void ExpectAllReleased() {
    EXPECT_TRUE(WaitUntil([&] { return router->backend().num_in_flight() == 0; }));
    EXPECT_TRUE(WaitUntil([&] { return router->pool_in_flight() == 0; })) << router->pool_in_flight();
    EXPECT_EQ(router->backend().num_queued(), 0);
    // Admission's books balance on every path (success, cancels queued or
    // mid-prefill, prefill failures, migrations): nothing left in either.
    EXPECT_EQ(router->backend().queued_tokens(), 0);
    EXPECT_EQ(router->backend().window_tokens(), 0);
    EXPECT_EQ(router->backend().num_in_window(), 0);
    for (auto& w : prefill) ExpectIdle(w->engine(), w->model().ranks[0].shape.num_blocks, "prefill");
    for (auto& w : decode) ExpectIdle(w->engine(), w->model().ranks[0].shape.num_blocks, "decode");
  }

  static void ExpectIdle(AsyncEngine& engine, int64_t num_blocks, const std::string& role) {
    const EngineStats s = testing::WaitIdle(engine);
    EXPECT_TRUE(testing::Idle(s)) << role << ": " << testing::Describe(s);
    EXPECT_EQ(s.kv.num_free_blocks, num_blocks) << role;
  }

  std::vector<std::unique_ptr<InProcPrefillWorker>> prefill;
  std::vector<std::unique_ptr<InProcDecodeWorker>> decode;
  std::unique_ptr<InProcRouter> router;
};

// What the router should stream for `req`: the tokens of the engine run
// directly (validated sampling, seed as given) and their text.
// A sampled request with a fixed seed (top-k, temperature 0.9 and a
// frequency penalty, so a replay must reposition the random stream and count
// the replayed tokens as generated).
inline v1::GenerateRequest SeededRequest(uint64_t seed, float frequency_penalty, const std::vector<int32_t>& prompt,
                                         uint32_t max_tokens) {
  v1::GenerateRequest req = testing::GreedyGenerateRequest(prompt, max_tokens);
  req.mutable_sampling()->set_temperature(0.9f);
  req.mutable_sampling()->set_top_k(40);
  req.mutable_sampling()->set_frequency_penalty(frequency_penalty);
  req.mutable_sampling()->set_seed(seed);
  return req;
}
inline v1::GenerateRequest SeededRequest(const std::vector<int32_t>& prompt, uint32_t max_tokens) {
  return SeededRequest(1234, 0.5f, prompt, max_tokens);
}

struct Expected {
  std::vector<int32_t> tokens;
  std::string text;
};

inline Expected Reference(const InProcRouter& router, const v1::GenerateRequest& req) {
  Expected e;
  absl::StatusOr<EngineRequest> r = testing::EngineRequestOf(router.validator(), req, "ref");
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return e;
  absl::StatusOr<std::map<std::string, std::vector<int32_t>>> tokens = testing::DirectTokens({*r});
  EXPECT_TRUE(tokens.ok()) << tokens.status();
  if (!tokens.ok()) return e;
  e.tokens = tokens->at("ref");
  IncrementalDecoder detok(router.tokenizer(), r->prompt_token_ids);
  for (int32_t t : e.tokens) e.text += detok.Add(t);
  e.text += detok.Flush();
  return e;
}

// A Generate call read by hand (partial reads, cancellation).
struct OpenStream {
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader;
  StreamResult result;

  // `api_key` (when not empty) goes as "authorization: Bearer KEY".
  OpenStream(v1::Generation::Stub& stub, const v1::GenerateRequest& req, const std::string& api_key = "") {
    ctx.set_deadline(Deadline());
    if (!api_key.empty()) ctx.AddMetadata("authorization", "Bearer " + api_key);
    reader = stub.Generate(&ctx, req);
  }
  bool ReadChunks(int n) {
    v1::GenerateResponse m;
    for (int i = 0; i < n; ++i) {
      if (!reader->Read(&m)) return false;
      testing::Accumulate(m, &result);
    }
    return true;
  }
  StreamResult Finish() {
    v1::GenerateResponse m;
    while (reader->Read(&m)) testing::Accumulate(m, &result);
    result.status = reader->Finish();
    return result;
  }
};

// A request started on the backend itself, under an id the test chooses (so
// it can speak to workers about it: the first attempt's id at the workers is
// this id), its sink's calls recorded in the router's order.
class DirectStream {
 public:
  DirectStream(ClusterBackend& backend, const RequestValidator& validator, const v1::GenerateRequest& req,
               const std::string& id)
      : state_(std::make_shared<State>()) {
    absl::StatusOr<ValidatedRequest> v = validator.Validate(req, id);
    EXPECT_TRUE(v.ok()) << v.status();
    if (!v.ok()) return;
    backend.Start(id, *std::move(v), [s = state_](const absl::Status& st, GenerationChunk chunk) {
      std::lock_guard<std::mutex> lock(s->mu);
      if (!st.ok()) {
        s->status = st;
        s->done = true;
        return;
      }
      s->tokens.insert(s->tokens.end(), chunk.token_ids.begin(), chunk.token_ids.end());
      if (chunk.finish != ChunkFinish::kNone) s->done = true;
    });
  }
  // Waits for the last chunk or the error (bounded by kHangGuard).
  bool WaitDone() {
    return WaitUntil([this] {
      std::lock_guard<std::mutex> lock(state_->mu);
      return state_->done;
    });
  }
  std::vector<int32_t> tokens() const {
    std::lock_guard<std::mutex> lock(state_->mu);
    return state_->tokens;
  }
  absl::Status status() const {
    std::lock_guard<std::mutex> lock(state_->mu);
    return state_->status;
  }

 private:
  struct State {
    std::mutex mu;
    std::vector<int32_t> tokens;
    absl::Status status;  // OK unless the stream failed
    bool done = false;
  };
  std::shared_ptr<State> state_;  // shared with the sink, which may outlive this
};

inline void ExpectExact(const StreamResult& got, const Expected& want, uint32_t prompt_tokens) {
  EXPECT_TRUE(got.status.ok()) << got.status.error_code() << " " << got.status.error_message();
  EXPECT_EQ(got.token_ids, want.tokens);
  EXPECT_EQ(got.text, want.text);
  EXPECT_EQ(got.finish, v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(got.usage.prompt_tokens(), prompt_tokens);
  EXPECT_EQ(got.usage.completion_tokens(), want.tokens.size());
}

}  // namespace tandem::cluster_backend_test
