#include "engine/core/admission_policy.h"

#include <algorithm>

namespace tandem {
namespace {

// none: one request at a time, run to completion.
class OneAtATime final : public AdmissionPolicy {
 public:
  int32_t MaxAdmissions(const AdmissionState& s) const override { return s.num_running == 0 ? 1 : 0; }
  bool reserve_full_context() const override { return true; }
  bool forms_batches() const override { return true; }
};

// static: whatever is waiting (up to batch_size) forms a batch when the last
// one has finished; dynamic additionally waits for a full batch or a delay.
class BatchAtATime final : public AdmissionPolicy {
 public:
  BatchAtATime(int32_t batch_size, int64_t max_delay_ms, bool wait_for_full_batch)
      : batch_size_(batch_size), max_delay_ms_(max_delay_ms), wait_(wait_for_full_batch) {}
  int32_t MaxAdmissions(const AdmissionState& s) const override {
    if (s.num_running > 0) return 0;
    if (wait_ && s.num_waiting < batch_size_ && s.oldest_wait_ms < max_delay_ms_) return 0;
    return batch_size_;
  }
  bool reserve_full_context() const override { return true; }
  bool forms_batches() const override { return true; }

 private:
  const int32_t batch_size_;
  const int64_t max_delay_ms_;
  const bool wait_;
};

// continuous / paged: iteration-level; sequences join whenever there is room.
class IterationLevel final : public AdmissionPolicy {
 public:
  IterationLevel(int32_t max_num_seqs, bool reserve) : max_num_seqs_(max_num_seqs), reserve_(reserve) {}
  int32_t MaxAdmissions(const AdmissionState& s) const override {
    return std::max(0, max_num_seqs_ - s.num_running);
  }
  bool reserve_full_context() const override { return reserve_; }
  bool forms_batches() const override { return false; }

 private:
  const int32_t max_num_seqs_;
  const bool reserve_;
};

}  // namespace

std::unique_ptr<AdmissionPolicy> MakeAdmissionPolicy(const SchedulerConfig& c) {
  switch (c.batching) {
    case BatchingStrategy::kNone:
      return std::make_unique<OneAtATime>();
    case BatchingStrategy::kStatic:
      return std::make_unique<BatchAtATime>(c.batch_size, c.max_batch_delay_ms, false);
    case BatchingStrategy::kDynamic:
      return std::make_unique<BatchAtATime>(c.batch_size, c.max_batch_delay_ms, true);
    case BatchingStrategy::kContinuous:
      return std::make_unique<IterationLevel>(c.max_num_seqs, true);
    case BatchingStrategy::kPaged:
      return std::make_unique<IterationLevel>(c.max_num_seqs, false);
  }
  return std::make_unique<IterationLevel>(c.max_num_seqs, false);
}

}  // namespace tandem
