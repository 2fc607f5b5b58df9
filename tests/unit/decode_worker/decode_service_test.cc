// DecodeService over a real gRPC server on 127.0.0.1 (ephemeral port) with
// the loopback KV transport, driven with its own stub as the router would:
// Admit reserves exactly the prompt's blocks and describes them; Release,
// a finished or cancelled Decode stream, and an expired reservation each
// bring the pool back to its exact starting counts; refusals change nothing.
// Decode runs on whatever KV is in the blocks (no prefill worker here): the
// token count and finish reason are exact, the token values are not checked
// (the cluster tests check those).
#include "decode_worker/decode_service.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kv_transfer/memory_descriptor.h"
#include "tests/testing/inproc_cluster.h"

namespace tandem {
namespace {

using testing::Deadline;
using testing::InProcDecodeWorker;
using testing::LoopStats;
using testing::TestPrompt;

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
  s->set_seed(1);
  return req;
}

grpc::Status Admit(InProcDecodeWorker& w, const v1::AdmitRequest& req, v1::AdmitResponse* resp) {
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  return w.stub().Admit(&ctx, req, resp);
}

grpc::Status Release(InProcDecodeWorker& w, const std::string& id) {
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  v1::ReleaseRequest req;
  req.set_request_id(id);
  v1::ReleaseResponse resp;
  grpc::Status st = w.stub().Release(&ctx, req, &resp);
  EXPECT_TRUE(resp.released());
  return st;
}

v1::WorkerStats Stats(InProcDecodeWorker& w) {
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  v1::WorkerStats s;
  EXPECT_TRUE(w.stub().Stats(&ctx, v1::StatsRequest(), &s).ok());
  return s;
}

struct DecodeResult {
  grpc::Status status;
  int messages = 0;
  std::vector<uint32_t> tokens;
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
    ++r.messages;
    r.tokens.insert(r.tokens.end(), m.token_ids().begin(), m.token_ids().end());
    if (m.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) r.finish = m.finish_reason();
  }
  r.status = reader->Finish();
  return r;
}

void ExpectIdle(InProcDecodeWorker& w, int32_t num_blocks) {
  const EngineStats s = testing::WaitIdle(w.engine());
  EXPECT_TRUE(testing::Idle(s)) << testing::Describe(s);
  EXPECT_EQ(s.kv.num_free_blocks, num_blocks);
}

std::unique_ptr<InProcDecodeWorker> StartWorker(const testing::DecodeWorkerOptions& o = {}) {
  absl::StatusOr<std::unique_ptr<InProcDecodeWorker>> w = InProcDecodeWorker::Start(o);
  EXPECT_TRUE(w.ok()) << w.status();
  return w.ok() ? *std::move(w) : nullptr;
}

TEST(DecodeServiceTest, AdmitReservesExactlyThePromptsBlocksAndReleaseFreesThem) {
  std::unique_ptr<InProcDecodeWorker> w = StartWorker();
  ASSERT_NE(w, nullptr);
  v1::WorkerStats before = Stats(*w);
  EXPECT_EQ(before.role(), v1::WORKER_ROLE_DECODE);
  EXPECT_EQ(before.worker_id(), "decode-test");
  EXPECT_EQ(before.kv_blocks_total(), 64u);
  EXPECT_EQ(before.kv_blocks_free(), 64u);
  EXPECT_EQ(before.kv_blocks_used(), 0u);
  EXPECT_EQ(before.tp_size(), 1u);

  v1::AdmitResponse resp;
  ASSERT_TRUE(Admit(*w, AdmitOf("r1", TestPrompt(40), 8), &resp).ok());
  const v1::KvDestination& d = resp.destination();
  EXPECT_EQ(d.worker_id(), "decode-test");
  EXPECT_EQ(d.reservation_id(), "r1");
  EXPECT_EQ(d.transport(), "loopback");
  ASSERT_EQ(d.block_ids_size(), BlocksFor(40));
  for (uint32_t b : d.block_ids()) EXPECT_LT(b, 64u);
  ASSERT_EQ(d.ranks_size(), 1);
  absl::StatusOr<MemoryDescriptor> desc = MemoryDescriptor::Deserialize(d.ranks(0).memory_descriptor());
  ASSERT_TRUE(desc.ok()) << desc.status();
  EXPECT_EQ(*desc, w->descriptor());
  const v1::KvLayout want = RankKvLayout(w->model(), 0);
  EXPECT_EQ(d.ranks(0).layout().SerializeAsString(), want.SerializeAsString());
  EXPECT_EQ(want.num_layers(), 6u);
  EXPECT_EQ(want.block_span_bytes(), 2u * 2 * 16 * 32 * 4);  // K+V, 2 heads, 16 tokens, dim 32, f32

  // Stats: the engine's snapshot catches up with the reservation.
  ASSERT_TRUE(testing::WaitUntil([&] { return Stats(*w).num_reservations() == 1; }));
  v1::WorkerStats during = Stats(*w);
  EXPECT_EQ(during.kv_blocks_used(), static_cast<uint32_t>(BlocksFor(40)));
  EXPECT_EQ(during.kv_blocks_free(), 64u - BlocksFor(40));
  EXPECT_EQ(during.num_running(), 0u);

  ASSERT_TRUE(Release(*w, "r1").ok());
  ExpectIdle(*w, 64);
  ASSERT_TRUE(Release(*w, "r1").ok());  // idempotent
  ExpectIdle(*w, 64);
}

// The put guard through the service: each Admit hands out a fresh token
// granted exactly its blocks; Release, activation (Decode) and an expired
// lease revoke it, so a late put under an old token is refused even once
// the blocks belong to the next reservation, whose bytes stay untouched.
class PutSender {
 public:
  PutSender() {
    transport_ = *MakeTransport("loopback");  // the fabric the in-process workers share
    EXPECT_TRUE(transport_->RegisterMemory(src_.data(), src_.size()).ok());
  }
  // Puts 64 bytes into the start of `block`, layer 0, of `dest`'s rank 0.
  absl::Status PutInto(const v1::KvDestination& dest, uint32_t block, const v1::KvLayout& layout) {
    absl::StatusOr<MemoryDescriptor> d = MemoryDescriptor::Deserialize(dest.ranks(0).memory_descriptor());
    if (!d.ok()) return d.status();
    absl::StatusOr<std::unique_ptr<TransferSession>> s = transport_->Connect(*d, dest.put_token());
    if (!s.ok()) return s.status();
    if (absl::Status st = (*s)->Put(0, uint64_t{block} * layout.block_span_bytes(), 64); !st.ok()) return st;
    return (*s)->Flush(absl::Seconds(5));
  }

 private:
  std::vector<uint8_t> src_ = std::vector<uint8_t>(64, 0xAB);
  std::unique_ptr<KvTransport> transport_;
};

TEST(DecodeServiceTest, PutsLandOnlyUnderTheTokenOfALiveReservation) {
  testing::DecodeWorkerOptions o;
  o.num_blocks = 3;  // one 40-token reservation (+8 to generate) fills the pool: the next reuses its blocks
  std::unique_ptr<InProcDecodeWorker> w = StartWorker(o);
  ASSERT_NE(w, nullptr);
  const v1::KvLayout layout = RankKvLayout(w->model(), 0);
  const KvBlockOwners& owners = w->put_owners();
  PutSender sender;

  v1::AdmitResponse a;
  ASSERT_TRUE(Admit(*w, AdmitOf("a", TestPrompt(40), 8), &a).ok());
  const v1::KvDestination& da = a.destination();
  ASSERT_NE(da.put_token(), 0u);
  ASSERT_EQ(da.block_ids_size(), 3);
  for (uint32_t b : da.block_ids()) EXPECT_EQ(owners.owner(BlockId(static_cast<int32_t>(b))), da.put_token());
  EXPECT_TRUE(sender.PutInto(da, da.block_ids(0), layout).ok());
  ASSERT_TRUE(Release(*w, "a").ok());
  ExpectIdle(*w, 3);
  for (uint32_t b : da.block_ids()) EXPECT_EQ(owners.owner(BlockId(static_cast<int32_t>(b))), 0u);

  v1::AdmitResponse b;
  ASSERT_TRUE(Admit(*w, AdmitOf("b", TestPrompt(40), 8), &b).ok());
  const v1::KvDestination& db = b.destination();
  ASSERT_NE(db.put_token(), da.put_token());
  ASSERT_EQ(db.block_ids_size(), 3);
  // A late put of "a" into the block "b" now holds: refused, memory untouched.
  const uint32_t shared = db.block_ids(0);
  auto* pool = static_cast<const uint8_t*>(w->model().ranks[0].base);
  const std::vector<uint8_t> before(pool, pool + w->model().ranks[0].bytes);
  v1::KvDestination stale = da;
  EXPECT_EQ(sender.PutInto(stale, shared, layout).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(std::equal(before.begin(), before.end(), pool));
  EXPECT_TRUE(sender.PutInto(db, shared, layout).ok());

  // Activation ends the reservation: no put lands in its blocks afterwards.
  const DecodeResult r = Decode(*w, "b", 42);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  for (uint32_t blk : db.block_ids()) EXPECT_EQ(owners.owner(BlockId(static_cast<int32_t>(blk))), 0u);
  EXPECT_EQ(sender.PutInto(db, shared, layout).code(), absl::StatusCode::kFailedPrecondition);
  ExpectIdle(*w, 3);
}

TEST(DecodeServiceTest, AnExpiredLeaseRevokesItsPutGrant) {
  testing::DecodeWorkerOptions o;
  o.reservation_timeout = std::chrono::milliseconds(50);
  std::unique_ptr<InProcDecodeWorker> w = StartWorker(o);
  ASSERT_NE(w, nullptr);
  PutSender sender;
  v1::AdmitResponse resp;
  ASSERT_TRUE(Admit(*w, AdmitOf("lapsed", TestPrompt(40), 8), &resp).ok());
  ExpectIdle(*w, 64);  // expired and freed by the loop
  const v1::KvDestination& d = resp.destination();
  for (uint32_t b : d.block_ids()) EXPECT_EQ(w->put_owners().owner(BlockId(static_cast<int32_t>(b))), 0u);
  EXPECT_EQ(sender.PutInto(d, d.block_ids(0), RankKvLayout(w->model(), 0)).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(DecodeServiceTest, RefusedAdmitsChangeNothing) {
  testing::DecodeWorkerOptions o;
  o.num_blocks = 8;
  std::unique_ptr<InProcDecodeWorker> w = StartWorker(o);
  ASSERT_NE(w, nullptr);
  v1::AdmitResponse resp;
  ASSERT_TRUE(Admit(*w, AdmitOf("big", TestPrompt(100), 4), &resp).ok());  // 7 of 8 blocks
  ASSERT_EQ(resp.destination().block_ids_size(), 7);

  v1::AdmitRequest oov = AdmitOf("oov", TestPrompt(10), 4);
  oov.set_prompt_token_ids(3, 1u << 20);
  EXPECT_EQ(Admit(*w, oov, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Admit(*w, AdmitOf("no-room", TestPrompt(40), 4), &resp).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(Admit(*w, AdmitOf("past-the-pool", TestPrompt(130), 4), &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Admit(*w, AdmitOf("big", TestPrompt(5), 4), &resp).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EngineStats s = LoopStats(w->engine());
  EXPECT_EQ(s.num_awaiting_kv, 1);
  EXPECT_EQ(s.kv.num_used_blocks, 7);

  ASSERT_TRUE(Release(*w, "big").ok());
  ExpectIdle(*w, 8);
  // The room is back.
  ASSERT_TRUE(Admit(*w, AdmitOf("no-room", TestPrompt(40), 4), &resp).ok());
  ASSERT_TRUE(Release(*w, "no-room").ok());
  ExpectIdle(*w, 8);
}

TEST(DecodeServiceTest, DecodeStreamsTheRestOfTheRequestThenFreesItsBlocks) {
  std::unique_ptr<InProcDecodeWorker> w = StartWorker();
  ASSERT_NE(w, nullptr);
  v1::AdmitResponse resp;
  ASSERT_TRUE(Admit(*w, AdmitOf("r", TestPrompt(20), 9), &resp).ok());
  const DecodeResult r = Decode(*w, "r", 42);
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.tokens.size(), 8u);  // max_tokens minus the prefill's first token
  EXPECT_EQ(r.messages, 8);        // one per step
  EXPECT_EQ(r.finish, v1::FINISH_REASON_LENGTH);
  ExpectIdle(*w, 64);

  // max_tokens 1: the first token alone ends it; one message, no tokens.
  ASSERT_TRUE(Admit(*w, AdmitOf("one", TestPrompt(20), 1), &resp).ok());
  const DecodeResult one = Decode(*w, "one", 42);
  EXPECT_TRUE(one.status.ok());
  EXPECT_EQ(one.messages, 1);
  EXPECT_TRUE(one.tokens.empty());
  EXPECT_EQ(one.finish, v1::FINISH_REASON_LENGTH);
  ExpectIdle(*w, 64);

  // A second Decode of a finished request has nothing to activate.
  EXPECT_EQ(Decode(*w, "one", 42).status.error_code(), grpc::StatusCode::NOT_FOUND);
  // A first token outside the vocabulary is refused; the reservation stays.
  ASSERT_TRUE(Admit(*w, AdmitOf("bad-first", TestPrompt(20), 4), &resp).ok());
  EXPECT_EQ(Decode(*w, "bad-first", 1u << 20).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(LoopStats(w->engine()).num_awaiting_kv, 1);
  ASSERT_TRUE(Release(*w, "bad-first").ok());
  ExpectIdle(*w, 64);
}

TEST(DecodeServiceTest, DecodeWithoutAReservationIsNotFound) {
  std::unique_ptr<InProcDecodeWorker> w = StartWorker();
  ASSERT_NE(w, nullptr);
  const DecodeResult r = Decode(*w, "nobody", 42);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(r.messages, 0);
  ExpectIdle(*w, 64);
}

TEST(DecodeServiceTest, AnExpiredReservationIsFreedAndItsDecodeIsNotFound) {
  testing::DecodeWorkerOptions o;
  o.reservation_timeout = std::chrono::milliseconds(50);
  std::unique_ptr<InProcDecodeWorker> w = StartWorker(o);
  ASSERT_NE(w, nullptr);
  v1::AdmitResponse resp;
  ASSERT_TRUE(Admit(*w, AdmitOf("late", TestPrompt(40), 8), &resp).ok());
  ASSERT_EQ(resp.destination().block_ids_size(), BlocksFor(40));
  ExpectIdle(*w, 64);  // the loop frees it on its own
  const DecodeResult r = Decode(*w, "late", 42);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(r.messages, 0);
  ExpectIdle(*w, 64);
}

TEST(DecodeServiceTest, ClientCancelMidDecodeFreesTheBlocks) {
  std::unique_ptr<InProcDecodeWorker> w = StartWorker();
  ASSERT_NE(w, nullptr);
  v1::AdmitResponse resp;
  ASSERT_TRUE(Admit(*w, AdmitOf("c", TestPrompt(20), 200), &resp).ok());
  // The loop holds after its second decode step: exactly one message is out.
  w->gate().Arm(2);
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  v1::DecodeRequest req;
  req.set_request_id("c");
  req.set_first_token_id(42);
  auto reader = w->stub().Decode(&ctx, req);
  v1::DecodeResponse m;
  ASSERT_TRUE(reader->Read(&m));
  EXPECT_EQ(m.token_ids_size(), 1);
  ASSERT_TRUE(w->gate().WaitHeld());
  ctx.TryCancel();
  while (reader->Read(&m)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  w->gate().Release();
  ExpectIdle(*w, 64);
  EXPECT_TRUE(testing::WaitUntil([&] { return w->drain().num_in_flight() == 0; }));
}

TEST(DecodeServiceTest, DrainingRefusesNewAdmitsButAdmittedRequestsDecode) {
  std::unique_ptr<InProcDecodeWorker> w = StartWorker();
  ASSERT_NE(w, nullptr);
  v1::AdmitResponse resp;
  ASSERT_TRUE(Admit(*w, AdmitOf("admitted", TestPrompt(20), 5), &resp).ok());
  w->drain().StartDraining();
  EXPECT_EQ(Admit(*w, AdmitOf("late", TestPrompt(20), 5), &resp).error_code(), grpc::StatusCode::UNAVAILABLE);
  const DecodeResult r = Decode(*w, "admitted", 42);
  EXPECT_TRUE(r.status.ok());
  EXPECT_EQ(r.tokens.size(), 4u);
  ExpectIdle(*w, 64);
  EXPECT_TRUE(testing::WaitUntil([&] { return w->drain().num_in_flight() == 0; }));
}

}  // namespace
}  // namespace tandem
