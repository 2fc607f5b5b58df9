#include "prefill_worker/kv_sender.h"

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status_macros.h"

namespace tandem {

KvSender::KvSender(KvTransport* transport, KvRegionLayout local, std::chrono::milliseconds flush_timeout,
                   int num_threads)
    : transport_(transport), local_(local), flush_timeout_(flush_timeout) {
  for (int i = 0; i < num_threads; ++i) threads_.emplace_back([this] { Run(); });
}

KvSender::~KvSender() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void KvSender::Send(std::vector<BlockId> src, v1::KvDestination dest, Done done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back({std::move(src), std::move(dest), std::move(done), nullptr, 0});
  }
  cv_.notify_one();
}

void KvSender::Flush(std::unique_ptr<TransferSession> session, uint32_t num_blocks, Done done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back({{}, {}, std::move(done), std::move(session), num_blocks});
  }
  cv_.notify_one();
}

void KvSender::Run() {
  while (true) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping and drained
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job.done(Transfer(job));
  }
}

absl::StatusOr<SendResult> KvSender::Transfer(const Job& job) {
  if (job.posted != nullptr) {
    RETURN_IF_ERROR(job.posted->Flush(absl::FromChrono(flush_timeout_)));
    return SendResult{job.posted->bytes_put(), job.num_blocks};
  }
  const v1::KvLayout& l = job.dest.layout();
  if (l.num_layers() != local_.num_layers || l.block_span_bytes() != static_cast<uint64_t>(local_.block_span_bytes) ||
      l.block_span_bytes() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "destination layout (", l.num_layers(), " layers, ", l.block_span_bytes(),
        " bytes per block span) differs from this worker's (", local_.num_layers, ", ", local_.block_span_bytes, ")"));
  }
  if (job.dest.block_ids_size() != static_cast<int>(job.src.size())) {
    return absl::InvalidArgumentError(absl::StrCat("destination has ", job.dest.block_ids_size(),
                                                   " blocks for a prompt of ", job.src.size()));
  }
  const KvRegionLayout remote{static_cast<int64_t>(l.num_layers()),
                              static_cast<int64_t>(l.layer_bytes() / l.block_span_bytes()),
                              static_cast<int64_t>(l.block_span_bytes())};
  std::vector<BlockId> dst;
  for (uint32_t b : job.dest.block_ids()) dst.emplace_back(static_cast<int32_t>(b));
  ASSIGN_OR_RETURN(MemoryDescriptor peer, MemoryDescriptor::Deserialize(job.dest.memory_descriptor()));
  ASSIGN_OR_RETURN(std::unique_ptr<TransferSession> session, transport_->Connect(peer));
  for (int64_t layer = 0; layer < local_.num_layers; ++layer) {
    RETURN_IF_ERROR(PutLayerBlocks(*session, local_, remote, layer, job.src, dst).status());
  }
  RETURN_IF_ERROR(session->Flush(absl::FromChrono(flush_timeout_)));
  return SendResult{session->bytes_put(), static_cast<uint32_t>(job.src.size())};
}

}  // namespace tandem
