#include "decode_worker/worker_runtime.h"

#include <csignal>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "kv_transfer/loopback/loopback_transport.h"
#include "tandem/v1/worker.grpc.pb.h"
#ifdef TANDEM_HAVE_UCX
#include "kv_transfer/ucx/ucx_transport.h"
#endif

namespace tandem {

absl::StatusOr<WorkerModel> LoadWorkerModel(const std::string& model_dir, const EngineConfig& config,
                                            std::chrono::milliseconds release_grace) {
  ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model, LlamaModel::Load(model_dir));
  WorkerModel w;
  w.config = model->config();
  ASSIGN_OR_RETURN(std::unique_ptr<LlmEngine> engine, LlmEngine::Create(std::move(model), config));
  w.kv_shape = engine->kv_cache().shape();
  const std::span<uint8_t> memory = engine->kv_cache().Memory();
  w.kv_base = memory.data();
  w.kv_bytes = memory.size();
  w.engine = std::make_unique<AsyncEngine>(std::move(engine), nullptr, release_grace);
  return w;
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
  stop_ = true;
  thread_.join();
}

void RouterRegistration::Run() {
  auto stub = v1::WorkerRegistry::NewStub(grpc::CreateChannel(router_address_, grpc::InsecureChannelCredentials()));
  auto interval = std::chrono::milliseconds(1000);
  auto next = std::chrono::steady_clock::now();
  while (!stop_) {
    if (std::chrono::steady_clock::now() >= next) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
      v1::RegisterResponse resp;
      if (stub->Register(&ctx, request_, &resp).ok() && resp.heartbeat_interval_ms() > 0) {
        interval = std::chrono::milliseconds(resp.heartbeat_interval_ms());
      }
      next = std::chrono::steady_clock::now() + interval;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // bounded: stop_ is seen quickly
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

}  // namespace tandem
