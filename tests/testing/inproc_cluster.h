// Test helper: a whole Tandem cluster inside one test process. Decode and
// prefill workers are AsyncEngines over the bundled tandem-shakespeare model,
// each behind a real gRPC server on 127.0.0.1 (ephemeral port) and moving KV
// over the in-process loopback transport, wired as decode_worker/main.cc and
// prefill_worker/main.cc wire them; a router (WorkerPool + ClusterBackend +
// GenerationService, as router/main.cc) can stand in front.
//
// Uses engine_test_tools.h to hold engines and read exact stats. Every wait
// is bounded (kHangGuard). Header-only; for tests.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/drain_gate.h"
#include "common/grpc/server.h"
#include "common/status_macros.h"
#include "decode_worker/decode_kv_plane.h"
#include "decode_worker/decode_service.h"
#include "worker/worker_model.h"
#include "engine/tokenizer/tokenizer.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "prefill_worker/kv_sender.h"
#include "prefill_worker/layer_shipper.h"
#include "prefill_worker/prefill_role.h"
#include "prefill_worker/prefill_service.h"
#include "router/cluster_backend.h"
#include "router/generation_service.h"
#include "router/request_validator.h"
#include "router/worker_pool.h"
#include "tandem/v1/generation.grpc.pb.h"
#include "tandem/v1/worker.grpc.pb.h"
#include "tests/testing/engine_test_tools.h"

namespace tandem::testing {

// --------------------------------------------------------------- workers

struct DecodeWorkerOptions {
  int64_t num_blocks = 64;
  std::chrono::milliseconds reservation_timeout{30000};
  std::chrono::milliseconds release_grace{0};
  std::string worker_id = "decode-test";
  int port = 0;  // 0: an ephemeral one; else this one (a restart at the same address)
};

// A decode worker as decode_worker/main.cc builds it (loopback transport).
class InProcDecodeWorker {
 public:
  static absl::StatusOr<std::unique_ptr<InProcDecodeWorker>> Start(const DecodeWorkerOptions& o = {}) {
    auto w = std::unique_ptr<InProcDecodeWorker>(new InProcDecodeWorker());
    ASSIGN_OR_RETURN(w->model_, LoadWorkerModel(BundledModelDir().string(), WorkerEngineConfig(o.num_blocks), 1,
                                                o.release_grace));
    ASSIGN_OR_RETURN(w->kv_, RegisterRankPools("loopback", w->model_));
    DecodeKvPlane plane = SetUpDecodeKvPlane(w->model_, w->kv_);
    w->put_owners_ = plane.owners;
    DecodeServiceOptions options;
    options.worker_id = o.worker_id;
    options.reservation_timeout = o.reservation_timeout;
    options.transport_name = "loopback";
    options.put_owners = plane.owners;
    w->gate_ = std::make_unique<StepGate>(w->model_.engine.get());
    w->service_ = std::make_unique<DecodeService>(w->model_.engine.get(), std::move(plane.regions), options,
                                                  &w->drain_);
    int port = 0;
    ASSIGN_OR_RETURN(w->server_,
                     StartGrpcServer(absl::StrCat("127.0.0.1:", o.port), {w->service_.get()}, &port));
    w->address_ = absl::StrCat("127.0.0.1:", port);
    w->stub_ = v1::DecodeWorker::NewStub(grpc::CreateChannel(w->address_, grpc::InsecureChannelCredentials()));
    return w;
  }

  ~InProcDecodeWorker() {
    if (gate_) gate_->Release();
    StopServer();
    if (model_.engine) model_.engine->Stop();  // before the service and transports go
    // Tickets may still be returned on gRPC's threads (a reactor's OnDone):
    // the gate goes only once they are (bounded: a stuck call fails the test).
    EXPECT_TRUE(drain_.WaitIdle(std::chrono::seconds(10))) << drain_.num_in_flight() << " tickets held";
  }

  // Stops serving as a killed process would: calls in flight are cancelled.
  void StopServer() {
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
  }
  // Drops the KV transport registration: puts into this worker fail from now on.
  void DropTransport() { kv_.transports.clear(); }

  AsyncEngine& engine() { return *model_.engine; }
  const WorkerModel& model() const { return model_; }
  const std::string& address() const { return address_; }
  StepGate& gate() { return *gate_; }
  DrainGate& drain() { return drain_; }
  v1::DecodeWorker::Stub& stub() { return *stub_; }
  KvTransport& transport() { return *kv_.transports[0]; }
  const MemoryDescriptor& descriptor() const { return kv_.descriptors[0]; }
  const KvBlockOwners& put_owners() const { return *put_owners_; }

 private:
  InProcDecodeWorker() = default;
  DrainGate drain_;  // outlives the server (its tickets live in calls)
  WorkerModel model_;
  RankTransports kv_;
  std::shared_ptr<KvBlockOwners> put_owners_;
  std::unique_ptr<StepGate> gate_;
  std::unique_ptr<DecodeService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::unique_ptr<v1::DecodeWorker::Stub> stub_;
};

struct PrefillWorkerOptions {
  int64_t num_blocks = 64;
  int tp = 1;
  int64_t max_num_batched_tokens = 2048;
  std::chrono::milliseconds flush_timeout{10000};
  std::string worker_id = "prefill-test";
};

// A prefill worker as prefill_worker/main.cc builds it (loopback transport).
class InProcPrefillWorker {
 public:
  static absl::StatusOr<std::unique_ptr<InProcPrefillWorker>> Start(const PrefillWorkerOptions& o = {}) {
    auto w = std::unique_ptr<InProcPrefillWorker>(new InProcPrefillWorker());
    EngineConfig config = WorkerEngineConfig(o.num_blocks);
    config.scheduler.max_num_batched_tokens = o.max_num_batched_tokens;
    ASSIGN_OR_RETURN(w->model_, LoadWorkerModel(BundledModelDir().string(), config, o.tp));
    ASSIGN_OR_RETURN(w->kv_, RegisterRankPools("loopback", w->model_));
    w->local_ = LocalKvGroupOf(w->model_, w->kv_);
    w->sender_ = std::make_unique<KvSender>(&w->local_, o.flush_timeout, 2);
    w->shipper_ = std::make_unique<LayerShipper>(&w->local_);
    LayerShipper* shipper = w->shipper_.get();
    w->model_.engine->RunOnLoop([shipper](LlmEngine& e) { e.SetStepObserver(shipper); });
    w->gate_ = std::make_unique<StepGate>(w->model_.engine.get());
    w->service_ = std::make_unique<PrefillService>(w->model_.engine.get(), w->shipper_.get(), w->sender_.get(),
                                                   o.worker_id, &w->drain_);
    int port = 0;
    ASSIGN_OR_RETURN(w->server_, StartGrpcServer("127.0.0.1:0", {w->service_.get()}, &port));
    w->address_ = absl::StrCat("127.0.0.1:", port);
    w->stub_ = v1::PrefillWorker::NewStub(grpc::CreateChannel(w->address_, grpc::InsecureChannelCredentials()));
    return w;
  }

  ~InProcPrefillWorker() {
    if (gate_) gate_->Release();
    StopServer();
    if (model_.engine) model_.engine->Stop();  // nothing new reaches the sender or the shipper
    sender_.reset();                           // drains transfers in flight
    model_.engine.reset();
    shipper_.reset();
    EXPECT_TRUE(drain_.WaitIdle(std::chrono::seconds(10))) << drain_.num_in_flight() << " tickets held";
  }

  void StopServer() {
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
  }

  AsyncEngine& engine() { return *model_.engine; }
  const WorkerModel& model() const { return model_; }
  const std::string& address() const { return address_; }
  StepGate& gate() { return *gate_; }
  DrainGate& drain() { return drain_; }
  PrefillService& service() { return *service_; }
  v1::PrefillWorker::Stub& stub() { return *stub_; }
  const LocalKvGroup& local() const { return local_; }
  // The sum of every rank transport's counters.
  TransportStats transport_stats() const {
    TransportStats sum;
    for (const auto& t : kv_.transports) {
      const TransportStats s = t->stats();
      sum.bytes_put_total += s.bytes_put_total;
      sum.puts_total += s.puts_total;
      sum.flushes_total += s.flushes_total;
      sum.failures_total += s.failures_total;
    }
    return sum;
  }

 private:
  InProcPrefillWorker() = default;
  DrainGate drain_;
  WorkerModel model_;
  RankTransports kv_;
  LocalKvGroup local_;
  std::unique_ptr<KvSender> sender_;
  std::unique_ptr<LayerShipper> shipper_;
  std::unique_ptr<StepGate> gate_;
  std::unique_ptr<PrefillService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::unique_ptr<v1::PrefillWorker::Stub> stub_;
};

// ---------------------------------------------------------------- router

// The router's request path as router/main.cc builds it, without registry,
// readiness and metrics: workers are added to pool() directly.
class InProcRouter {
 public:
  // `auth` (may be null: an open API) must outlive the router.
  static absl::StatusOr<std::unique_ptr<InProcRouter>> Start(ClusterOptions options = {},
                                                             const ApiKeyAuth* auth = nullptr) {
    auto r = std::unique_ptr<InProcRouter>(new InProcRouter());
    ASSIGN_OR_RETURN(r->config_, LoadModelConfig(BundledModelDir()));
    ASSIGN_OR_RETURN(r->tokenizer_, Tokenizer::Load(BundledModelDir()));
    r->backend_ = std::make_unique<ClusterBackend>(&r->pool_, r->tokenizer_.get(), r->config_, options);
    r->service_ = std::make_unique<GenerationService>(RequestValidator(r->config_, r->tokenizer_.get()),
                                                      r->backend_.get(), nullptr, &r->drain_, auth);
    int port = 0;
    ASSIGN_OR_RETURN(r->server_, StartGrpcServer("127.0.0.1:0", {r->service_.get()}, &port));
    r->address_ = absl::StrCat("127.0.0.1:", port);
    r->stub_ = v1::Generation::NewStub(grpc::CreateChannel(r->address_, grpc::InsecureChannelCredentials()));
    return r;
  }

  ~InProcRouter() {
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
    // Requests still in the backend are cancelled (their callbacks hold the backend).
    if (backend_) WaitUntil([this] { return backend_->num_in_flight() == 0; }, std::chrono::seconds(5));
    service_.reset();
    backend_.reset();
  }

  WorkerPool& pool() { return pool_; }
  ClusterBackend& backend() { return *backend_; }
  DrainGate& drain() { return drain_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const ModelConfig& config() const { return config_; }
  v1::Generation::Stub& stub() { return *stub_; }
  RequestValidator validator() const { return RequestValidator(config_, tokenizer_.get()); }
  // Total requests the router has in flight on its workers (its load counts).
  int pool_in_flight() const {
    int n = 0;
    for (const v1::WorkerInfo& w : pool_.List()) n += static_cast<int>(w.requests_in_flight());
    return n;
  }

 private:
  InProcRouter() = default;
  WorkerPool pool_;
  ModelConfig config_;
  std::unique_ptr<Tokenizer> tokenizer_;
  DrainGate drain_;
  std::unique_ptr<ClusterBackend> backend_;
  std::unique_ptr<GenerationService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::unique_ptr<v1::Generation::Stub> stub_;
};

// An address nothing listens on, reserved while this lives: a TCP socket
// bound to 127.0.0.1 (ephemeral port) that never listens, so connecting is
// refused and no other server can take the port meanwhile.
class DeadAddress {
 public:
  DeadAddress() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof(a);
    if (fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
      port_ = ntohs(a.sin_port);
    }
  }
  ~DeadAddress() {
    if (fd_ >= 0) ::close(fd_);
  }
  DeadAddress(const DeadAddress&) = delete;
  DeadAddress& operator=(const DeadAddress&) = delete;

  bool ok() const { return port_ != 0; }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// ---------------------------------------------------------------- clients

// What one Generate stream delivered.
struct StreamResult {
  grpc::Status status;
  std::vector<int32_t> token_ids;
  std::string text;
  int num_chunks = 0;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  v1::Usage usage;
};

inline void Accumulate(const v1::GenerateResponse& m, StreamResult* r) {
  ++r->num_chunks;
  r->token_ids.insert(r->token_ids.end(), m.token_ids().begin(), m.token_ids().end());
  r->text += m.text();
  if (m.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
    r->finish = m.finish_reason();
    r->usage = m.usage();
  }
}

// Runs one Generate call to its end (bounded by kHangGuard).
inline StreamResult Generate(v1::Generation::Stub& stub, const v1::GenerateRequest& request) {
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = stub.Generate(&ctx, request);
  StreamResult r;
  v1::GenerateResponse m;
  while (reader->Read(&m)) Accumulate(m, &r);
  r.status = reader->Finish();
  return r;
}

// A greedy request over token ids (no eos stop) for `max_tokens`.
inline v1::GenerateRequest GreedyGenerateRequest(const std::vector<int32_t>& prompt, uint32_t max_tokens) {
  v1::GenerateRequest req;
  for (int32_t t : prompt) req.add_prompt_token_ids(static_cast<uint32_t>(t));
  req.mutable_sampling()->set_temperature(0.0f);
  req.mutable_sampling()->set_max_tokens(max_tokens);
  req.mutable_sampling()->set_ignore_eos(true);
  return req;
}

// The engine request a router request becomes (validated sampling, `seed`).
inline absl::StatusOr<EngineRequest> EngineRequestOf(const RequestValidator& validator,
                                                     const v1::GenerateRequest& request, std::string id,
                                                     uint64_t seed = 0) {
  ASSIGN_OR_RETURN(ValidatedRequest v, validator.Validate(request, id));
  EngineRequest r;
  r.request_id = std::move(id);
  r.prompt_token_ids = v.prompt_token_ids;
  r.sampling = v.sampling;
  if (!r.sampling.seed) r.sampling.seed = seed;
  return r;
}

}  // namespace tandem::testing
