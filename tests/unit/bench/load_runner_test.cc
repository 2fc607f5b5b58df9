// LoadRunner's multi-turn conversations over a scripted backend (no
// network): each later turn is sent only after the one before finished,
// with the conversation so far (that turn's prompt and output) followed by
// its own message; conversations interleave under a concurrency cap; a
// failed turn ends its conversation, the turns left recorded ABORTED and
// never sent.
#include "bench/load/load_runner.h"

#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace tandem::bench {
namespace {

// Answers each request on a thread of its own: output ids 1000 + 10 x
// (request number) + k for k < output_len; fails the requests named in
// `fail`. Keeps what it was sent.
class ScriptedBackend final : public RequestBackend {
 public:
  explicit ScriptedBackend(std::vector<std::string> fail) : fail_(std::move(fail)) {}
  ~ScriptedBackend() override {
    for (std::thread& t : threads_) t.join();
  }
  void Start(const BenchRequest& request, const std::string& request_id, Clock::time_point,
             RequestRecord* record, std::function<void()> done) override {
    const int64_t n = std::stoll(request_id.substr(request_id.find('-') + 1));
    {
      std::lock_guard<std::mutex> lock(mu_);
      sent_[n] = request.prompt_token_ids;
      order_.push_back(n);
    }
    const bool fails = std::find(fail_.begin(), fail_.end(), request_id) != fail_.end();
    threads_.emplace_back([record, done, n, fails, len = request.output_len] {
      if (fails) {
        record->status = absl::UnavailableError("scripted failure");
      } else {
        for (int64_t k = 0; k < len; ++k) record->output_token_ids.push_back(static_cast<uint32_t>(1000 + 10 * n + k));
      }
      done();
    });
  }
  std::map<int64_t, std::vector<uint32_t>> sent_;
  std::vector<int64_t> order_;

 private:
  std::vector<std::string> fail_;
  std::mutex mu_;
  std::vector<std::thread> threads_;  // Start runs on the dispatcher thread only
};

std::vector<BenchRequest> Conversations(int conversations, int turns) {
  std::vector<BenchRequest> out;
  for (int c = 0; c < conversations; ++c) {
    for (int t = 0; t < turns; ++t) {
      BenchRequest r;
      r.conversation = c;
      r.turn = t;
      r.output_len = 2;
      r.prompt_token_ids = {static_cast<uint32_t>(100 * c + t)};
      out.push_back(r);
    }
  }
  return out;
}

LoadPoint Capped(int64_t cap) {
  LoadPoint p;
  p.arrivals.request_rate = std::numeric_limits<double>::infinity();
  p.max_concurrency = cap;
  return p;
}

TEST(BenchLoadRunnerTest, EachTurnCarriesTheConversationSoFar) {
  auto backend = std::make_unique<ScriptedBackend>(std::vector<std::string>{});
  ScriptedBackend* b = backend.get();
  LoadRunner runner(std::move(backend));
  const RunResult r = runner.Run(Conversations(3, 3), Capped(2), 1, "r-");
  ASSERT_EQ(r.records.size(), 9u);
  for (const RequestRecord& rec : r.records) EXPECT_TRUE(rec.status.ok()) << rec.status;
  // Conversation 1 (requests 3, 4, 5): message, outputs of the turn before, message.
  EXPECT_EQ(b->sent_.at(3), (std::vector<uint32_t>{100}));
  EXPECT_EQ(b->sent_.at(4), (std::vector<uint32_t>{100, 1030, 1031, 101}));
  EXPECT_EQ(b->sent_.at(5), (std::vector<uint32_t>{100, 1030, 1031, 101, 1040, 1041, 102}));
  EXPECT_EQ(r.records[5].requested_input_tokens, 7);
  // Within a conversation, turns go in order.
  std::map<int64_t, int64_t> last_turn;
  for (int64_t n : b->order_) {
    const int64_t c = n / 3;
    if (last_turn.contains(c)) EXPECT_EQ(last_turn[c], n - 1);
    last_turn[c] = n;
  }
}

TEST(BenchLoadRunnerTest, AFailedTurnEndsItsConversationAndTheOthersGoOn) {
  auto backend = std::make_unique<ScriptedBackend>(std::vector<std::string>{"r-1"});
  ScriptedBackend* b = backend.get();
  LoadRunner runner(std::move(backend));
  const RunResult r = runner.Run(Conversations(2, 4), Capped(0), 1, "r-");
  EXPECT_TRUE(r.records[0].status.ok());
  EXPECT_EQ(r.records[1].status.code(), absl::StatusCode::kUnavailable);
  for (int i : {2, 3}) {
    EXPECT_EQ(r.records[i].status.code(), absl::StatusCode::kAborted);
    EXPECT_FALSE(b->sent_.contains(i));
  }
  for (int i : {4, 5, 6, 7}) EXPECT_TRUE(r.records[i].status.ok()) << i;
  EXPECT_EQ(b->sent_.size(), 6u);
}

}  // namespace
}  // namespace tandem::bench
