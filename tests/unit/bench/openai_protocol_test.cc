// The OpenAI completions protocol without a network: the request body, SSE
// framing split at every byte, event interpretation, HTTP errors, and the
// reconciliation of per-event token counts with usage.completion_tokens.
#include "bench/load/openai_protocol.h"

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tandem::bench {
namespace {

TEST(BenchOpenAiTest, RequestBody) {
  BenchRequest r{{5, 17, 1999}, 12};
  nlohmann::json j = nlohmann::json::parse(CompletionRequestBody(r, {"m1", false, 0.0f}));
  EXPECT_EQ(j["model"], "m1");
  EXPECT_EQ(j["prompt"], nlohmann::json({5, 17, 1999}));
  EXPECT_EQ(j["max_tokens"], 12);
  EXPECT_EQ(j["stream"], true);
  EXPECT_EQ(j["stream_options"], nlohmann::json({{"include_usage", true}}));
  EXPECT_EQ(j["temperature"], 0.0);
  EXPECT_FALSE(j.contains("ignore_eos"));
  j = nlohmann::json::parse(CompletionRequestBody(r, {"m1", true, 0.5f}));
  EXPECT_EQ(j["ignore_eos"], true);
  EXPECT_EQ(j["temperature"], 0.5);
}

std::vector<std::string> FeedInPieces(const std::string& stream, size_t piece) {
  SseParser p;
  std::vector<std::string> events;
  for (size_t i = 0; i < stream.size(); i += piece) {
    p.Feed(std::string_view(stream).substr(i, piece),
           [&](const SseEvent& e) { events.push_back((e.is_error ? "E:" : "") + e.data); });
  }
  return events;
}

SseEvent Data(std::string data) { return {std::move(data), false}; }

TEST(BenchOpenAiTest, SseFramingWhateverTheSplit) {
  const std::string stream =
      ": comment\n\ndata: {\"a\":1}\n\ndata:{\"b\":2}\r\n\r\nevent: x\nid: 3\ndata: line1\ndata: line2\n\n"
      "error: {\"code\":500}\n\ndata: [DONE]\r\rdata: incomplete";
  const std::vector<std::string> want = {"{\"a\":1}", "{\"b\":2}", "line1\nline2", "E:{\"code\":500}", "[DONE]"};
  for (size_t piece : {1, 2, 3, 7, 1000}) EXPECT_EQ(FeedInPieces(stream, piece), want) << piece;
}

TEST(BenchOpenAiTest, EventsCountChoicesAndUsage) {
  StreamState s;
  EXPECT_EQ(ApplyEvent(Data(R"({"choices":[{"text":"a","finish_reason":null}]})"), &s), EventKind::kChoice);
  EXPECT_EQ(ApplyEvent(Data(R"({"choices":[{"text":"","finish_reason":"length"}]})"), &s), EventKind::kChoice);
  EXPECT_EQ(ApplyEvent(Data(R"({"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":1}})"), &s),
            EventKind::kOther);
  EXPECT_FALSE(s.done);
  EXPECT_EQ(ApplyEvent(Data("[DONE]"), &s), EventKind::kDone);
  EXPECT_EQ(s.choice_events, 2);
  EXPECT_EQ(s.usage_prompt_tokens, 7);
  EXPECT_EQ(s.usage_completion_tokens, 1);
  EXPECT_EQ(s.finish_reason, "length");
  EXPECT_TRUE(s.done);
  EXPECT_TRUE(s.error.ok());
}

TEST(BenchOpenAiTest, ErrorEvents) {
  StreamState s;
  EXPECT_EQ(ApplyEvent(Data(R"({"error":{"message":"slot died","code":500}})"), &s), EventKind::kError);
  EXPECT_EQ(s.error.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(s.error.message(), "error event: slot died");
  // llama-server: `error: {"code": 500, "message": ..., "type": "server_error"}` then data: [DONE].
  StreamState u;
  EXPECT_EQ(ApplyEvent({R"({"code":503,"message":"Input prompt is too big compared to KV size."})", true}, &u),
            EventKind::kError);
  EXPECT_EQ(u.error.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(u.error.message(), "error event: Input prompt is too big compared to KV size.");
  StreamState t;
  EXPECT_EQ(ApplyEvent(Data("not json"), &t), EventKind::kError);
  EXPECT_FALSE(t.error.ok());
}

TEST(BenchOpenAiTest, HttpErrors) {
  absl::Status s = HttpErrorStatus(400, R"({"error":{"message":"prompt too long","type":"invalid_request_error"}})");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "HTTP 400: prompt too long");
  EXPECT_EQ(HttpErrorStatus(503, "busy").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(HttpErrorStatus(503, "busy").message(), "HTTP 503: busy");
  EXPECT_EQ(HttpErrorStatus(401, R"({"error":"bad key"})").message(), "HTTP 401: bad key");
  EXPECT_EQ(HttpErrorStatus(500, "").code(), absl::StatusCode::kInternal);
  EXPECT_EQ(HttpErrorStatus(418, "").code(), absl::StatusCode::kUnknown);
}

std::vector<int64_t> Counts(int64_t usage, int events) {
  std::vector<ChunkArrival> chunks(events, ChunkArrival{0, 1});
  ReconcileTokenCounts(usage, &chunks);
  std::vector<int64_t> out;
  for (const ChunkArrival& c : chunks) out.push_back(c.num_tokens);
  return out;
}

TEST(BenchOpenAiTest, TokenCountsFollowUsage) {
  EXPECT_EQ(Counts(3, 3), (std::vector<int64_t>{1, 1, 1}));
  EXPECT_EQ(Counts(3, 4), (std::vector<int64_t>{1, 1, 1, 0}));  // llama-server's final finish_reason event
  EXPECT_EQ(Counts(5, 3), (std::vector<int64_t>{1, 1, 3}));
  EXPECT_EQ(Counts(0, 2), (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(Counts(4, 0), (std::vector<int64_t>{}));
}

}  // namespace
}  // namespace tandem::bench
