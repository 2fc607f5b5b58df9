// PrefillService and DecodeService, each over its own real gRPC server on
// 127.0.0.1, moving KV over the loopback transport, driven by hand as the
// router drives them (Admit -> Prefill -> Decode). The first token and every
// decoded token equal the same engine run directly; the bytes shipped are
// exact; every failure (bad or short destination, decode worker's transport
// gone before the puts or before the flush, caller deadline, draining,
// invalid prompt) gets its status code and leaves the prefill engine's pool
// exactly as it started.
#include "prefill_worker/prefill_service.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "wire/worker_protocol.h"
#include "tests/testing/inproc_cluster.h"

namespace tandem {
namespace {

using testing::Deadline;
using testing::InProcDecodeWorker;
using testing::InProcPrefillWorker;
using testing::LoopStats;
using testing::TestPrompt;

constexpr uint64_t kBlockLayerBytes = 2 * 2 * 16 * 32 * 4;  // one block's K+V of one layer (f32)
constexpr uint64_t kLayers = 6;

int32_t BlocksFor(size_t tokens) { return static_cast<int32_t>((tokens + 15) / 16); }

v1::AdmitRequest AdmitOf(const std::string& id, const std::vector<int32_t>& prompt, uint32_t max_tokens) {
  v1::AdmitRequest req;
  req.set_request_id(id);
  for (int32_t t : prompt) req.add_prompt_token_ids(static_cast<uint32_t>(t));
  v1::ResolvedSampling* s = req.mutable_sampling();
  s->set_temperature(0.0f);
  s->set_top_p(1.0f);
  s->set_repetition_penalty(1.0f);
  s->set_max_tokens(max_tokens);
  s->set_ignore_eos(true);
  s->set_seed(11);
  return req;
}

v1::PrefillRequest PrefillOf(const v1::AdmitRequest& admit, const v1::KvDestination& dest) {
  v1::PrefillRequest req;
  req.set_request_id(admit.request_id());
  *req.mutable_prompt_token_ids() = admit.prompt_token_ids();
  *req.mutable_sampling() = admit.sampling();
  *req.mutable_destination() = dest;
  return req;
}

EngineRequest EngineRequestOf(const v1::AdmitRequest& admit) {
  EngineRequest r;
  r.request_id = admit.request_id();
  r.prompt_token_ids.assign(admit.prompt_token_ids().begin(), admit.prompt_token_ids().end());
  r.sampling = FromProto(admit.sampling());
  return r;
}

grpc::Status Admit(InProcDecodeWorker& w, const v1::AdmitRequest& req, v1::KvDestination* dest) {
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  v1::AdmitResponse resp;
  grpc::Status st = w.stub().Admit(&ctx, req, &resp);
  *dest = resp.destination();
  return st;
}

grpc::Status Prefill(InProcPrefillWorker& w, const v1::PrefillRequest& req, v1::PrefillResponse* resp,
                     std::chrono::milliseconds timeout = testing::kHangGuard) {
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(timeout));
  return w.stub().Prefill(&ctx, req, resp);
}

void Release(InProcDecodeWorker& w, const std::string& id) {
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  v1::ReleaseRequest req;
  req.set_request_id(id);
  v1::ReleaseResponse resp;
  EXPECT_TRUE(w.stub().Release(&ctx, req, &resp).ok());
}

struct DecodeResult {
  grpc::Status status;
  std::vector<int32_t> tokens;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
};

DecodeResult Decode(InProcDecodeWorker& w, const std::string& id, uint32_t first_token) {
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  v1::DecodeRequest req;
  req.set_request_id(id);
  req.set_first_token_id(first_token);
  auto reader = w.stub().Decode(&ctx, req);
  DecodeResult r;
  v1::DecodeResponse m;
  while (reader->Read(&m)) {
    r.tokens.insert(r.tokens.end(), m.token_ids().begin(), m.token_ids().end());
    if (m.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) r.finish = m.finish_reason();
  }
  r.status = reader->Finish();
  return r;
}

template <typename W>
void ExpectIdle(W& w, int32_t num_blocks = 64) {
  const EngineStats s = testing::WaitIdle(w.engine());
  EXPECT_TRUE(testing::Idle(s)) << testing::Describe(s);
  EXPECT_EQ(s.kv.num_free_blocks, num_blocks);
}

class PrefillServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<InProcDecodeWorker>> d = InProcDecodeWorker::Start();
    ASSERT_TRUE(d.ok()) << d.status();
    decode_ = *std::move(d);
    absl::StatusOr<std::unique_ptr<InProcPrefillWorker>> p = InProcPrefillWorker::Start();
    ASSERT_TRUE(p.ok()) << p.status();
    prefill_ = *std::move(p);
  }
  void TearDown() override {
    prefill_.reset();
    decode_.reset();
  }

  std::unique_ptr<InProcDecodeWorker> decode_;
  std::unique_ptr<InProcPrefillWorker> prefill_;
};

TEST_F(PrefillServiceTest, ShipsTheKvAndDecodeContinuesExactlyAsTheEngineAlone) {
  const std::vector<v1::AdmitRequest> admits = {AdmitOf("a", TestPrompt(40, 1), 12),
                                                AdmitOf("b", TestPrompt(17, 2), 9),
                                                AdmitOf("c", TestPrompt(5, 3), 20)};
  std::vector<EngineRequest> direct;
  for (const v1::AdmitRequest& a : admits) direct.push_back(EngineRequestOf(a));
  absl::StatusOr<std::map<std::string, std::vector<int32_t>>> want = testing::DirectTokens(direct);
  ASSERT_TRUE(want.ok()) << want.status();

  uint64_t total_bytes = 0;
  for (const v1::AdmitRequest& a : admits) {
    SCOPED_TRACE(a.request_id());
    v1::KvDestination dest;
    ASSERT_TRUE(Admit(*decode_, a, &dest).ok());
    v1::PrefillResponse resp;
    const grpc::Status st = Prefill(*prefill_, PrefillOf(a, dest), &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    const int32_t blocks = BlocksFor(static_cast<size_t>(a.prompt_token_ids_size()));
    EXPECT_EQ(resp.num_blocks_sent(), static_cast<uint32_t>(blocks));
    EXPECT_EQ(resp.kv_bytes_sent(), kLayers * static_cast<uint64_t>(blocks) * kBlockLayerBytes);
    total_bytes += resp.kv_bytes_sent();
    EXPECT_EQ(static_cast<int32_t>(resp.first_token_id()), want->at(a.request_id()).front());
    // The prefill worker let go of its blocks before answering.
    const EngineStats p = LoopStats(prefill_->engine());
    EXPECT_TRUE(testing::Idle(p)) << testing::Describe(p);
    const DecodeResult d = Decode(*decode_, a.request_id(), resp.first_token_id());
    EXPECT_TRUE(d.status.ok()) << d.status.error_message();
    std::vector<int32_t> all = {static_cast<int32_t>(resp.first_token_id())};
    all.insert(all.end(), d.tokens.begin(), d.tokens.end());
    EXPECT_EQ(all, want->at(a.request_id()));
    EXPECT_EQ(d.finish, v1::FINISH_REASON_LENGTH);
  }
  EXPECT_EQ(prefill_->service().kv_bytes_sent(), total_bytes);
  EXPECT_EQ(prefill_->transport_stats().bytes_put_total, total_bytes);
  EXPECT_EQ(prefill_->transport_stats().flushes_total, admits.size());
  EXPECT_EQ(prefill_->transport_stats().failures_total, 0u);
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  v1::WorkerStats stats;
  ASSERT_TRUE(prefill_->stub().Stats(&ctx, v1::StatsRequest(), &stats).ok());
  EXPECT_EQ(stats.role(), v1::WORKER_ROLE_PREFILL);
  EXPECT_EQ(stats.kv_transfer_bytes_total(), total_bytes);
  ExpectIdle(*prefill_);
  ExpectIdle(*decode_);
}

TEST_F(PrefillServiceTest, ConcurrentPrefillsFromFourThreadsAllLandExactly) {
  std::vector<v1::AdmitRequest> admits;
  std::vector<EngineRequest> direct;
  for (int i = 0; i < 4; ++i) {
    admits.push_back(AdmitOf("r" + std::to_string(i), TestPrompt(12 + 9 * i, 20 + i), 6 + i));
    direct.push_back(EngineRequestOf(admits.back()));
  }
  absl::StatusOr<std::map<std::string, std::vector<int32_t>>> want = testing::DirectTokens(direct);
  ASSERT_TRUE(want.ok()) << want.status();
  std::vector<std::vector<int32_t>> got(admits.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < admits.size(); ++i) {
    threads.emplace_back([&, i] {
      v1::KvDestination dest;
      if (!Admit(*decode_, admits[i], &dest).ok()) return;
      v1::PrefillResponse resp;
      if (!Prefill(*prefill_, PrefillOf(admits[i], dest), &resp).ok()) return;
      got[i].push_back(static_cast<int32_t>(resp.first_token_id()));
      const DecodeResult d = Decode(*decode_, admits[i].request_id(), resp.first_token_id());
      got[i].insert(got[i].end(), d.tokens.begin(), d.tokens.end());
    });
  }
  for (std::thread& t : threads) t.join();
  for (size_t i = 0; i < admits.size(); ++i) EXPECT_EQ(got[i], want->at(admits[i].request_id())) << i;
  ExpectIdle(*prefill_);
  ExpectIdle(*decode_);
}

TEST_F(PrefillServiceTest, ABadDestinationIsInvalidArgumentAndTheEngineNeverSeesThePrompt) {
  const v1::AdmitRequest a = AdmitOf("bad", TestPrompt(40), 8);
  v1::KvDestination dest;
  ASSERT_TRUE(Admit(*decode_, a, &dest).ok());
  v1::KvDestination no_ranks = dest;
  no_ranks.clear_ranks();
  v1::KvDestination other_model = dest;
  other_model.mutable_ranks(0)->mutable_layout()->set_total_kv_heads(4);
  v1::KvDestination garbage = dest;
  garbage.mutable_ranks(0)->set_memory_descriptor("garbage");
  const int64_t steps = LoopStats(prefill_->engine()).num_steps;
  for (const v1::KvDestination& d : {no_ranks, other_model, garbage}) {
    v1::PrefillResponse resp;
    EXPECT_EQ(Prefill(*prefill_, PrefillOf(a, d), &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  const EngineStats p = LoopStats(prefill_->engine());
  EXPECT_EQ(p.num_steps, steps);
  EXPECT_TRUE(testing::Idle(p)) << testing::Describe(p);
  EXPECT_EQ(prefill_->transport_stats().puts_total, 0u);
  // The reservation is the router's to release.
  EXPECT_EQ(LoopStats(decode_->engine()).num_awaiting_kv, 1);
  Release(*decode_, "bad");
  ExpectIdle(*decode_);
}

TEST_F(PrefillServiceTest, ADestinationShorterThanThePromptFailsAfterThePrefillAndFreesIt) {
  const v1::AdmitRequest a = AdmitOf("short", TestPrompt(40), 8);
  v1::KvDestination dest;
  ASSERT_TRUE(Admit(*decode_, a, &dest).ok());
  v1::KvDestination short_dest = dest;
  short_dest.mutable_block_ids()->RemoveLast();
  v1::PrefillResponse resp;
  EXPECT_EQ(Prefill(*prefill_, PrefillOf(a, short_dest), &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(prefill_->transport_stats().puts_total, 0u);
  EXPECT_EQ(prefill_->service().kv_bytes_sent(), 0u);
  ExpectIdle(*prefill_);
  Release(*decode_, "short");
  ExpectIdle(*decode_);
}

TEST_F(PrefillServiceTest, TheDecodeWorkersTransportGoneMidPrefillIsAborted) {
  const v1::AdmitRequest a = AdmitOf("orphan", TestPrompt(40), 8);
  v1::KvDestination dest;
  ASSERT_TRUE(Admit(*decode_, a, &dest).ok());
  grpc::Status st;
  {
    testing::LoopPause pause(&prefill_->engine());  // the prompt waits in the queue
    ASSERT_TRUE(pause.paused());
    std::jthread caller([&] {
      v1::PrefillResponse resp;
      st = Prefill(*prefill_, PrefillOf(a, dest), &resp);
    });
    ASSERT_TRUE(testing::WaitUntil([&] { return prefill_->drain().num_in_flight() == 1; }));
    decode_->DropTransport();  // either before or after Expect connected: the same code
    pause.Resume();
    caller.join();
  }
  EXPECT_EQ(st.error_code(), grpc::StatusCode::ABORTED) << st.error_message();
  EXPECT_EQ(prefill_->transport_stats().puts_total, 0u);
  ExpectIdle(*prefill_);
  EXPECT_TRUE(testing::WaitUntil([&] { return prefill_->drain().num_in_flight() == 0; }));
  Release(*decode_, "orphan");
  ExpectIdle(*decode_);
}

// Every layer was posted during the step, then the decode worker's transport
// goes before the flush: the flush fails, the caller gets ABORTED (the
// destination failed, not this worker: the router re-admits elsewhere), the
// bytes do not count as sent, and the prefill engine lets go of the prompt.
TEST_F(PrefillServiceTest, AFlushThatFailsAfterEveryLayerWasPostedIsAbortedAndFreesThePrompt) {
  const v1::AdmitRequest a = AdmitOf("unflushed", TestPrompt(40), 8);
  v1::KvDestination dest;
  ASSERT_TRUE(Admit(*decode_, a, &dest).ok());
  prefill_->gate().Arm(1);  // held after the prefill step, before its flush
  grpc::Status st;
  std::jthread caller([&] {
    v1::PrefillResponse resp;
    st = Prefill(*prefill_, PrefillOf(a, dest), &resp);
  });
  ASSERT_TRUE(prefill_->gate().WaitHeld());
  EXPECT_EQ(prefill_->transport_stats().bytes_put_total, kLayers * 3 * kBlockLayerBytes);  // all posted
  decode_->DropTransport();
  prefill_->gate().Release();
  caller.join();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::ABORTED) << st.error_message();
  EXPECT_EQ(prefill_->transport_stats().flushes_total, 0u);
  EXPECT_EQ(prefill_->transport_stats().failures_total, 1u);
  EXPECT_EQ(prefill_->service().kv_bytes_sent(), 0u);
  ExpectIdle(*prefill_);
  Release(*decode_, "unflushed");
  ExpectIdle(*decode_);
}

TEST_F(PrefillServiceTest, ACallerDeadlineCancelsThePrefillAndFreesItsBlocks) {
  const v1::AdmitRequest a = AdmitOf("slow", TestPrompt(40), 8);
  v1::KvDestination dest;
  ASSERT_TRUE(Admit(*decode_, a, &dest).ok());
  {
    testing::LoopPause pause(&prefill_->engine());
    ASSERT_TRUE(pause.paused());
    v1::PrefillResponse resp;
    EXPECT_EQ(Prefill(*prefill_, PrefillOf(a, dest), &resp, std::chrono::milliseconds(200)).error_code(),
              grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  ExpectIdle(*prefill_);
  EXPECT_TRUE(testing::WaitUntil([&] { return prefill_->drain().num_in_flight() == 0; }));
  Release(*decode_, "slow");
  ExpectIdle(*decode_);
}

TEST_F(PrefillServiceTest, DrainingAndInvalidPromptsAreRefusedWithNothingHeld) {
  const v1::AdmitRequest a = AdmitOf("p", TestPrompt(20), 8);
  v1::KvDestination dest;
  ASSERT_TRUE(Admit(*decode_, a, &dest).ok());
  v1::PrefillRequest oov = PrefillOf(a, dest);
  oov.set_prompt_token_ids(2, 1u << 20);
  v1::PrefillResponse resp;
  EXPECT_EQ(Prefill(*prefill_, oov, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ExpectIdle(*prefill_);
  prefill_->drain().StartDraining();
  EXPECT_EQ(Prefill(*prefill_, PrefillOf(a, dest), &resp).error_code(), grpc::StatusCode::UNAVAILABLE);
  ExpectIdle(*prefill_);
  EXPECT_EQ(prefill_->transport_stats().puts_total, 0u);
  Release(*decode_, "p");
  ExpectIdle(*decode_);
}

// The bytes of `blocks` (every layer) in a decode worker's pool.
std::vector<uint8_t> PoolBytes(InProcDecodeWorker& w, const v1::KvDestination& d) {
  const RankKvPool& pool = w.model().ranks[0];
  const uint64_t span = static_cast<uint64_t>(pool.shape.block_span_bytes());
  const uint64_t layer_bytes = static_cast<uint64_t>(pool.shape.layer_bytes());
  std::vector<uint8_t> out;
  const uint8_t* base = static_cast<const uint8_t*>(pool.base);
  for (int64_t layer = 0; layer < pool.shape.num_layers; ++layer) {
    for (uint32_t b : d.block_ids()) {
      const uint8_t* p = base + static_cast<uint64_t>(layer) * layer_bytes + b * span;
      out.insert(out.end(), p, p + span);
    }
  }
  return out;
}

// A reservation expires on the decode worker while its prefill waits on a
// busy prefill worker; its blocks go to the next request, whose KV arrives
// and is complete. The late prefill must then not write into those blocks:
// the next request's KV and tokens stay exactly its own. The router bounds
// every prefill by the lease it last saw confirmed (ship_within_ms; here the
// whole 100 ms lease, as right after Admit): past it the prefill worker
// posts nothing and answers ABORTED, which the router answers by admitting
// the request again elsewhere.
TEST(PrefillServiceHazardTest, ALatePrefillNeverWritesIntoAnExpiredReservationsReusedBlocks) {
  testing::DecodeWorkerOptions o;
  o.num_blocks = 4;  // two 3-block prompts must share blocks
  o.reservation_timeout = std::chrono::milliseconds(100);
  absl::StatusOr<std::unique_ptr<InProcDecodeWorker>> decode = InProcDecodeWorker::Start(o);
  absl::StatusOr<std::unique_ptr<InProcPrefillWorker>> busy = InProcPrefillWorker::Start();
  absl::StatusOr<std::unique_ptr<InProcPrefillWorker>> spare = InProcPrefillWorker::Start();
  ASSERT_TRUE(decode.ok() && busy.ok() && spare.ok());
  const v1::AdmitRequest late = AdmitOf("late", TestPrompt(40, 1), 8);
  const v1::AdmitRequest next = AdmitOf("next", TestPrompt(40, 2), 20);
  absl::StatusOr<std::map<std::string, std::vector<int32_t>>> want = testing::DirectTokens({EngineRequestOf(next)});
  ASSERT_TRUE(want.ok());

  v1::KvDestination late_dest, next_dest;
  ASSERT_TRUE(Admit(**decode, late, &late_dest).ok());
  grpc::Status late_status;
  testing::LoopPause pause(&(*busy)->engine());
  ASSERT_TRUE(pause.paused());
  std::jthread caller([&] {
    v1::PrefillResponse resp;
    v1::PrefillRequest req = PrefillOf(late, late_dest);
    req.set_ship_within_ms(100);
    late_status = Prefill(**busy, req, &resp);
  });
  ASSERT_TRUE(testing::WaitUntil([&] { return (*busy)->drain().num_in_flight() == 1; }));
  testing::WaitIdle((*decode)->engine());  // "late" expired
  const grpc::Status admitted = Admit(**decode, next, &next_dest);
  ASSERT_TRUE(admitted.ok()) << admitted.error_code() << " " << admitted.error_message();
  // "next" lives on as the router keeps a lease alive: renewed every 20 ms
  // until its Decode activates it (however slow the machine, e.g. under
  // ASan), while "late" was left to expire.
  std::atomic<bool> activated{false};
  std::jthread renewer([&] {
    for (int i = 0; i < 3000 && !activated.load(); ++i) {  // bounded: 60 s
      grpc::ClientContext ctx;
      ctx.set_deadline(Deadline());
      v1::RenewRequest req;
      req.add_request_ids("next");
      v1::RenewResponse resp;
      (void)(*decode)->stub().Renew(&ctx, req, &resp);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  v1::PrefillResponse next_resp;
  v1::PrefillRequest next_req = PrefillOf(next, next_dest);
  next_req.set_ship_within_ms(60000);  // in time: ships as usual
  ASSERT_TRUE(Prefill(**spare, next_req, &next_resp).ok());
  const std::vector<uint8_t> next_kv = PoolBytes(**decode, next_dest);

  pause.Resume();
  caller.join();
  EXPECT_EQ(late_status.error_code(), grpc::StatusCode::ABORTED)
      << "the late prefill shipped into blocks it no longer owns: " << late_status.error_message();
  EXPECT_TRUE(PoolBytes(**decode, next_dest) == next_kv) << "the next request's KV was overwritten";
  const DecodeResult d = Decode(**decode, "next", next_resp.first_token_id());
  activated = true;
  std::vector<int32_t> all = {static_cast<int32_t>(next_resp.first_token_id())};
  all.insert(all.end(), d.tokens.begin(), d.tokens.end());
  EXPECT_EQ(all, want->at("next"));
}

}  // namespace
}  // namespace tandem
