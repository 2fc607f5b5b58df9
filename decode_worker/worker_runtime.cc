#include "decode_worker/worker_runtime.h"

#include <csignal>
#include <ctime>
#include <iostream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/core/model_executor.h"
#include "engine/model/tp_shard.h"
#include "grpcpp/grpcpp.h"
#include "kv_transfer/loopback/loopback_transport.h"
#include "tandem/v1/worker.grpc.pb.h"
#ifdef TANDEM_HAVE_UCX
#include "kv_transfer/ucx/ucx_transport.h"
#endif

namespace tandem {

absl::StatusOr<WorkerModel> LoadWorkerModel(const std::string& model_dir, const EngineConfig& config, int tp,
                                            std::chrono::milliseconds release_grace) {
  ASSIGN_OR_RETURN(std::unique_ptr<ModelExecutor> model, LoadExecutor(model_dir, tp, config.precision));
  WorkerModel w;
  w.config = model->config();
  ASSIGN_OR_RETURN(std::unique_ptr<LlmEngine> engine, LlmEngine::Create(std::move(model), config));
  for (int r = 0; r < engine->tp_size(); ++r) {
    KvCache& cache = engine->kv_cache(r);
    const std::span<uint8_t> memory = cache.Memory();
    const ShardRange heads = KvHeadShard(w.config.num_key_value_heads, {r, engine->tp_size()});
    w.ranks.push_back({cache.shape(), heads.begin, memory.data(), memory.size()});
  }
  w.engine = std::make_unique<AsyncEngine>(std::move(engine), nullptr, release_grace);
  return w;
}

absl::StatusOr<RankTransports> RegisterRankPools(const std::string& transport_name, const WorkerModel& model) {
  RankTransports out;
  for (const RankKvPool& pool : model.ranks) {
    ASSIGN_OR_RETURN(std::unique_ptr<KvTransport> t, MakeTransport(transport_name));
    ASSIGN_OR_RETURN(MemoryDescriptor d, t->RegisterMemory(pool.base, pool.bytes));
    out.transports.push_back(std::move(t));
    out.descriptors.push_back(std::move(d));
  }
  return out;
}

v1::KvLayout RankKvLayout(const WorkerModel& model, int rank) {
  const KvCacheShape& shape = model.ranks[rank].shape;
  v1::KvLayout l;
  l.set_num_layers(static_cast<uint32_t>(shape.num_layers));
  l.set_block_size(static_cast<uint32_t>(shape.block_size));
  l.set_num_kv_heads(static_cast<uint32_t>(shape.num_kv_heads));
  l.set_head_dim(static_cast<uint32_t>(shape.head_dim));
  l.set_dtype(std::string(DTypeName(shape.dtype)));
  l.set_block_span_bytes(static_cast<uint64_t>(shape.block_span_bytes()));
  l.set_layer_bytes(static_cast<uint64_t>(shape.layer_bytes()));
  l.set_tp_rank(static_cast<uint32_t>(rank));
  l.set_tp_size(static_cast<uint32_t>(model.ranks.size()));
  l.set_kv_head_begin(static_cast<uint32_t>(model.ranks[rank].kv_head_begin));
  l.set_total_kv_heads(static_cast<uint32_t>(model.config.num_key_value_heads));
  return l;
}

absl::StatusOr<std::unique_ptr<KvTransport>> MakeTransport(const std::string& name) {
  if (name == "loopback") {
    static auto* fabric = new std::shared_ptr<LoopbackFabric>(std::make_shared<LoopbackFabric>());
    return std::unique_ptr<KvTransport>(std::make_unique<LoopbackTransport>(*fabric));
  }
#ifdef TANDEM_HAVE_UCX
  if (name == "ucx") {
    ASSIGN_OR_RETURN(std::unique_ptr<UcxTransport> t, UcxTransport::Create(UcxTransportOptions{}));
    return std::unique_ptr<KvTransport>(std::move(t));
  }
#endif
  return absl::InvalidArgumentError(absl::StrCat("--kv-transport '", name, "': must be ucx or loopback"));
}

RouterRegistration::RouterRegistration(std::string router_address, v1::RegisterRequest request)
    : router_address_(std::move(router_address)), request_(std::move(request)), thread_([this] { Run(); }) {}

RouterRegistration::~RouterRegistration() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void RouterRegistration::SetDraining() {
  std::unique_lock<std::mutex> lock(mu_);
  draining_ = true;
  cv_.notify_all();
  // A heartbeat in flight (2 s deadline) and then the draining one (2 s).
  cv_.wait_for(lock, std::chrono::seconds(5), [this] { return draining_sent_ || stop_; });
}

void RouterRegistration::Run() {
  // Every Register goes from this thread, in order, so a heartbeat sent
  // before the drain cannot arrive after the draining one and undo it.
  auto stub = v1::WorkerRegistry::NewStub(grpc::CreateChannel(router_address_, grpc::InsecureChannelCredentials()));
  auto interval = std::chrono::milliseconds(1000);
  auto next = std::chrono::steady_clock::now();
  v1::RegisterRequest request = request_;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_until(lock, next, [this] { return stop_ || (draining_ && !draining_sent_); });
      if (stop_) return;
      request.set_draining(draining_);
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::RegisterResponse resp;
    if (stub->Register(&ctx, request, &resp).ok() && resp.heartbeat_interval_ms() > 0) {
      interval = std::chrono::milliseconds(resp.heartbeat_interval_ms());
    }
    next = std::chrono::steady_clock::now() + interval;
    if (request.draining()) {
      std::lock_guard<std::mutex> lock(mu_);
      draining_sent_ = true;  // answered or failed: SetDraining() stops waiting either way
      cv_.notify_all();
    }
  }
}

namespace {
sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}
}  // namespace

void BlockStopSignals() {
  const sigset_t set = StopSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForStopSignal() {
  const sigset_t set = StopSignals();
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

int WaitForStopSignalFor(std::chrono::milliseconds timeout) {
  const sigset_t set = StopSignals();
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(timeout).count();
  const timespec wait{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  const int sig = sigtimedwait(&set, nullptr, &wait);
  return sig > 0 ? sig : 0;
}

bool WaitUntilIdle(const std::function<bool()>& idle, std::chrono::milliseconds timeout) {
  constexpr auto kSettle = std::chrono::milliseconds(100);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::optional<std::chrono::steady_clock::time_point> idle_since;
  while (true) {
    const auto now = std::chrono::steady_clock::now();
    if (!idle()) {
      idle_since.reset();
    } else if (!idle_since) {
      idle_since = now;
    } else if (now - *idle_since >= kSettle) {
      return true;
    }
    if (now >= deadline) return idle_since.has_value();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace tandem
