// BufferedWriteReactor over a real in-process gRPC server on 127.0.0.1: a
// tiny tandem.v1.DecodeWorker whose Decode stream is a BufferedWriteReactor
// the test drives through its StreamHandle. Messages arrive exactly once
// and in push order (one producer or several), a reader that does not read
// never blocks a producer, Close() follows the queued messages, and a client
// that cancels (or whose deadline passes) mid-write runs on_cancel exactly
// once, ends as CANCELLED / DEADLINE_EXCEEDED, and leaves a handle whose
// later pushes are dropped. Every wait is bounded.
#include "common/grpc/buffered_write_reactor.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tandem/v1/worker.grpc.pb.h"

namespace tandem {
namespace {

constexpr std::chrono::seconds kHangGuard{30};

using Handle = std::shared_ptr<StreamHandle<v1::DecodeResponse>>;

// One Decode call on the server side, as the test sees it.
struct ServerCall {
  Handle handle;
  std::shared_ptr<std::atomic<int>> cancels;  // on_cancel runs
  std::weak_ptr<int> alive;                   // expires when the reactor is deleted (OnDone ran)
};

// Decode streams whatever the test pushes into the call's handle.
class StreamService final : public v1::DecodeWorker::CallbackService {
 public:
  grpc::ServerWriteReactor<v1::DecodeResponse>* Decode(grpc::CallbackServerContext*,
                                                       const v1::DecodeRequest* req) override {
    auto cancels = std::make_shared<std::atomic<int>>(0);
    auto alive = std::make_shared<int>(0);
    auto [reactor, handle] = BufferedWriteReactor<v1::DecodeResponse>::Create([cancels, alive] { ++*cancels; });
    {
      std::lock_guard<std::mutex> lock(mu_);
      calls_[req->request_id()] = {handle, cancels, alive};
    }
    cv_.notify_all();
    return reactor;
  }

  // The server side of call `id`, once it started.
  bool Wait(const std::string& id, ServerCall* out) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, kHangGuard, [&] { return calls_.contains(id); })) return false;
    *out = calls_[id];
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, ServerCall> calls_;
};

bool WaitUntil(const std::function<bool()>& pred) {
  const auto end = std::chrono::steady_clock::now() + kHangGuard;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

v1::DecodeResponse Message(uint32_t a, uint32_t b = 0, size_t padding = 0) {
  v1::DecodeResponse m;
  m.add_token_ids(a);
  m.add_token_ids(b);
  if (padding > 0) {
    v1::Logprobs* lp = m.add_logprobs();
    for (size_t i = 0; i < padding; ++i) lp->add_top_logprobs()->set_token_id(static_cast<uint32_t>(i));
  }
  return m;
}

class BufferedWriteReactorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port_, 0);
    stub_ = v1::DecodeWorker::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }

  // Opens call `id` and waits for its server side.
  std::unique_ptr<grpc::ClientReader<v1::DecodeResponse>> Open(grpc::ClientContext* ctx, const std::string& id,
                                                               ServerCall* call) {
    v1::DecodeRequest req;
    req.set_request_id(id);
    auto reader = stub_->Decode(ctx, req);
    EXPECT_TRUE(service_.Wait(id, call));
    return reader;
  }

  int port_ = 0;
  StreamService service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::DecodeWorker::Stub> stub_;
};

TEST_F(BufferedWriteReactorTest, WritesEveryMessageInPushOrderThenTheStatus) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kHangGuard);
  ServerCall call;
  auto reader = Open(&ctx, "ordered", &call);
  ASSERT_NE(call.handle, nullptr);
  constexpr uint32_t kN = 500;
  for (uint32_t i = 0; i < kN; ++i) call.handle->Push(Message(i));
  call.handle->Close(grpc::Status::OK);
  std::vector<uint32_t> got;
  v1::DecodeResponse m;
  while (reader->Read(&m)) got.push_back(m.token_ids(0));
  const grpc::Status st = reader->Finish();
  EXPECT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(got.size(), kN);
  for (uint32_t i = 0; i < kN; ++i) ASSERT_EQ(got[i], i);
  ASSERT_TRUE(WaitUntil([&] { return call.alive.expired(); }));
  EXPECT_EQ(call.cancels->load(), 0);
}

TEST_F(BufferedWriteReactorTest, MessagesFromSeveralProducersArriveOnceEachInItsProducersOrder) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kHangGuard);
  ServerCall call;
  auto reader = Open(&ctx, "producers", &call);
  ASSERT_NE(call.handle, nullptr);
  constexpr uint32_t kProducers = 4, kEach = 300;
  std::vector<std::thread> producers;
  for (uint32_t p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (uint32_t i = 0; i < kEach; ++i) call.handle->Push(Message(p, i));
    });
  }
  for (std::thread& t : producers) t.join();
  call.handle->Close(grpc::Status::OK);
  std::vector<uint32_t> next(kProducers, 0);
  uint32_t total = 0;
  v1::DecodeResponse m;
  while (reader->Read(&m)) {
    ASSERT_LT(m.token_ids(0), kProducers);
    EXPECT_EQ(m.token_ids(1), next[m.token_ids(0)]++) << "producer " << m.token_ids(0);
    ++total;
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(total, kProducers * kEach);
  for (uint32_t p = 0; p < kProducers; ++p) EXPECT_EQ(next[p], kEach);
}

// A client that reads nothing: the producer's pushes return at once (they
// queue; one write is outstanding, stalled by flow control), and once the
// client reads, everything arrives in order.
TEST_F(BufferedWriteReactorTest, AReaderThatDoesNotReadNeverBlocksTheProducer) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kHangGuard);
  ServerCall call;
  auto reader = Open(&ctx, "slow", &call);
  ASSERT_NE(call.handle, nullptr);
  constexpr uint32_t kN = 400;  // ~8 KB each: far past the flow-control windows
  for (uint32_t i = 0; i < kN; ++i) call.handle->Push(Message(i, 0, 1000));
  call.handle->Close(grpc::Status(grpc::StatusCode::ABORTED, "done pushing"));
  uint32_t i = 0;
  v1::DecodeResponse m;
  while (reader->Read(&m)) {
    ASSERT_EQ(m.token_ids(0), i);
    ASSERT_EQ(m.logprobs(0).top_logprobs_size(), 1000);
    ++i;
  }
  const grpc::Status st = reader->Finish();
  EXPECT_EQ(i, kN);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(st.error_message(), "done pushing");
}

TEST_F(BufferedWriteReactorTest, CloseFollowsTheQueuedMessagesAndLaterPushesAreDropped) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kHangGuard);
  ServerCall call;
  auto reader = Open(&ctx, "close", &call);
  ASSERT_NE(call.handle, nullptr);
  for (uint32_t i = 0; i < 3; ++i) call.handle->Push(Message(i));
  call.handle->Close(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "pool full"));
  call.handle->Push(Message(99));                  // after Close: dropped
  call.handle->Close(grpc::Status::OK);            // the first Close wins
  std::vector<uint32_t> got;
  v1::DecodeResponse m;
  while (reader->Read(&m)) got.push_back(m.token_ids(0));
  const grpc::Status st = reader->Finish();
  EXPECT_EQ(got, (std::vector<uint32_t>{0, 1, 2}));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(st.error_message(), "pool full");
  ASSERT_TRUE(WaitUntil([&] { return call.alive.expired(); }));
  EXPECT_EQ(call.cancels->load(), 0);
}

TEST_F(BufferedWriteReactorTest, AnEmptyStreamEndsWithItsStatus) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kHangGuard);
  ServerCall call;
  auto reader = Open(&ctx, "empty", &call);
  ASSERT_NE(call.handle, nullptr);
  call.handle->Close(grpc::Status::OK);
  v1::DecodeResponse m;
  EXPECT_FALSE(reader->Read(&m));
  EXPECT_TRUE(reader->Finish().ok());
  ASSERT_TRUE(WaitUntil([&] { return call.alive.expired(); }));
  EXPECT_EQ(call.cancels->load(), 0);
}

// The client cancels after reading some messages while more are queued and
// one write is stalled (the client stopped reading): on_cancel runs once,
// the call ends CANCELLED, the reactor goes, and the handle outlives it
// (pushes and closes are dropped, nothing crashes).
TEST_F(BufferedWriteReactorTest, ClientCancelMidWriteRunsOnCancelOnceAndDropsLaterPushes) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + kHangGuard);
  ServerCall call;
  auto reader = Open(ctx.get(), "cancel", &call);
  ASSERT_NE(call.handle, nullptr);
  for (uint32_t i = 0; i < 300; ++i) call.handle->Push(Message(i, 0, 1000));
  v1::DecodeResponse m;
  for (uint32_t i = 0; i < 5; ++i) {
    ASSERT_TRUE(reader->Read(&m));
    ASSERT_EQ(m.token_ids(0), i);
  }
  ctx->TryCancel();
  while (reader->Read(&m)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(WaitUntil([&] { return call.alive.expired(); }));  // OnDone ran: the reactor is gone
  EXPECT_EQ(call.cancels->load(), 1);
  for (uint32_t i = 0; i < 10; ++i) call.handle->Push(Message(1000 + i));
  call.handle->Close(grpc::Status::OK);
  EXPECT_EQ(call.cancels->load(), 1);
}

TEST_F(BufferedWriteReactorTest, AClientDeadlineCancelsTheStream) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  ServerCall call;
  auto reader = Open(&ctx, "deadline", &call);
  ASSERT_NE(call.handle, nullptr);
  call.handle->Push(Message(7));  // then nothing, and no Close
  v1::DecodeResponse m;
  std::vector<uint32_t> got;
  while (reader->Read(&m)) got.push_back(m.token_ids(0));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LE(got.size(), 1u);
  ASSERT_TRUE(WaitUntil([&] { return call.alive.expired(); }));
  EXPECT_EQ(call.cancels->load(), 1);
  call.handle->Push(Message(8));
  call.handle->Close(grpc::Status::OK);
}

// Server shutdown (a worker stopping) cancels open streams: on_cancel runs
// once and the client sees UNAVAILABLE (gRPC's "Cancelling all calls").
TEST_F(BufferedWriteReactorTest, ServerShutdownCancelsOpenStreams) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kHangGuard);
  ServerCall call;
  auto reader = Open(&ctx, "shutdown", &call);
  ASSERT_NE(call.handle, nullptr);
  call.handle->Push(Message(1));
  v1::DecodeResponse m;
  ASSERT_TRUE(reader->Read(&m));
  server_->Shutdown(std::chrono::system_clock::now());
  while (reader->Read(&m)) {
  }
  const grpc::Status st = reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
  EXPECT_TRUE(call.alive.expired());  // Shutdown returns after every reactor's OnDone
  EXPECT_EQ(call.cancels->load(), 1);
  call.handle->Push(Message(2));
  call.handle->Close(grpc::Status::OK);
}

}  // namespace
}  // namespace tandem
