#include "bench/load/grpc_backend.h"

#include "bench/load/generate_call.h"

namespace tandem::bench {
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

class GrpcBackend : public RequestBackend {
 public:
  GrpcBackend(std::shared_ptr<grpc::Channel> channel, RequestOptions options)
      : channel_(std::move(channel)), stub_(v1::Generation::NewStub(channel_)), options_(std::move(options)) {}

  void Start(const BenchRequest& request, const std::string& request_id, Clock::time_point epoch,
             RequestRecord* record, std::function<void()> done) override {
    GenerateCall::Start(stub_.get(), ToProto(request, options_, request_id), epoch,
                        std::chrono::seconds(options_.timeout_s), options_.api_key, record, std::move(done));
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Generation::Stub> stub_;
  RequestOptions options_;
};

}  // namespace

std::unique_ptr<RequestBackend> MakeGrpcBackend(std::shared_ptr<grpc::Channel> channel, RequestOptions options) {
  return std::make_unique<GrpcBackend>(std::move(channel), std::move(options));
}

}  // namespace tandem::bench
