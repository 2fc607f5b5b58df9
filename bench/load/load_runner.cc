#include "bench/load/load_runner.h"

#include <condition_variable>
#include <mutex>
#include <semaphore>
#include <thread>

#include "absl/strings/str_cat.h"
#include "bench/load/arrivals.h"
#include "bench/load/generate_call.h"

namespace tandem::bench {

struct LoadRunner::Impl {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Generation::Stub> stub;
  RequestOptions options;
};

LoadRunner::LoadRunner(std::shared_ptr<grpc::Channel> channel, RequestOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->stub = v1::Generation::NewStub(channel);
  impl_->channel = std::move(channel);
  impl_->options = options;
}

LoadRunner::~LoadRunner() = default;

namespace {

v1::GenerateRequest ToProto(const BenchRequest& r, const RequestOptions& o, std::string id) {
  v1::GenerateRequest req;
  req.set_request_id(std::move(id));
  req.mutable_prompt_token_ids()->Add(r.prompt_token_ids.begin(), r.prompt_token_ids.end());
  v1::SamplingParams* s = req.mutable_sampling();
  s->set_max_tokens(static_cast<uint32_t>(r.output_len));
  s->set_ignore_eos(o.ignore_eos);
  if (o.temperature) s->set_temperature(*o.temperature);
  return req;
}

}  // namespace

RunResult LoadRunner::Run(const std::vector<BenchRequest>& requests, const LoadPoint& point,
                          uint64_t arrival_seed, const std::string& id_prefix) {
  using Clock = GenerateCall::Clock;
  const int64_t n = static_cast<int64_t>(requests.size());
  const std::vector<double> offsets = ArrivalOffsets(point.arrivals, n, arrival_seed);
  RunResult result;
  result.records.resize(requests.size());

  // Free slots when capped; unused otherwise.
  std::counting_semaphore<> slots(point.max_concurrency > 0 ? point.max_concurrency : 0);
  std::mutex mu;
  std::condition_variable all_done;
  int64_t remaining = n;  // guarded by mu

  const Clock::time_point epoch = Clock::now();
  for (int64_t i = 0; i < n; ++i) {
    std::this_thread::sleep_until(epoch + std::chrono::duration_cast<Clock::duration>(
                                              std::chrono::duration<double>(offsets[i])));
    if (point.max_concurrency > 0) slots.acquire();
    RequestRecord& record = result.records[i];
    record.requested_input_tokens = static_cast<int64_t>(requests[i].prompt_token_ids.size());
    record.requested_output_tokens = requests[i].output_len;
    auto done = [&] {
      if (point.max_concurrency > 0) slots.release();
      std::lock_guard<std::mutex> lock(mu);
      if (--remaining == 0) all_done.notify_all();
    };
    GenerateCall::Start(impl_->stub.get(), ToProto(requests[i], impl_->options, absl::StrCat(id_prefix, i)),
                        epoch, std::chrono::seconds(impl_->options.timeout_s), impl_->options.api_key, &record,
                        done);
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    all_done.wait(lock, [&] { return remaining == 0; });
  }
  for (const RequestRecord& r : result.records) result.duration_ns = std::max(result.duration_ns, r.trace.end_ns);
  return result;
}

}  // namespace tandem::bench
