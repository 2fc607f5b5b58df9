#include "engine/core/kv_event_log.h"

#include <algorithm>

namespace tandem {

int64_t KvEventLog::Batch::num_changes() const {
  int64_t n = 0;
  for (const Run& r : runs) n += static_cast<int64_t>(r.hashes.size());
  return n;
}

void KvEventLog::Record(uint64_t hash, bool removed) {
  std::lock_guard<std::mutex> lock(mu_);
  changes_.push_back({hash, removed});
  ++last_seq_;
  if (static_cast<int64_t>(changes_.size()) > max_retained_) {
    changes_.pop_front();
    ++first_kept_;
  }
  if (removed) {
    held_.erase(hash);
  } else {
    held_.insert(hash);
  }
}

KvEventLog::Batch KvEventLog::Since(uint64_t applied, int64_t max_changes) const {
  std::lock_guard<std::mutex> lock(mu_);
  Batch b;
  if (applied == 0 || applied + 1 < first_kept_ || applied > last_seq_) {
    // Knows nothing, fell behind what is kept, or counts from another log
    // (it cannot be ahead of this one): start it over.
    b.snapshot = true;
    b.first_seq = last_seq_;
    Run all;
    const int64_t limit = std::min(max_snapshot_, std::max<int64_t>(max_changes, 0));
    all.hashes.reserve(std::min<size_t>(held_.size(), static_cast<size_t>(limit)));
    for (uint64_t h : held_) {
      if (static_cast<int64_t>(all.hashes.size()) >= limit) break;
      all.hashes.push_back(h);
    }
    b.runs.push_back(std::move(all));
    return b;
  }
  b.first_seq = applied + 1;
  const uint64_t end = std::min<uint64_t>(last_seq_, applied + static_cast<uint64_t>(std::max<int64_t>(max_changes, 0)));
  for (uint64_t seq = applied + 1; seq <= end; ++seq) {
    const Change& c = changes_[seq - first_kept_];
    if (b.runs.empty() || b.runs.back().removed != c.removed) b.runs.push_back({c.removed, {}});
    b.runs.back().hashes.push_back(c.hash);
  }
  return b;
}

uint64_t KvEventLog::last_seq() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_seq_;
}

int64_t KvEventLog::num_held() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(held_.size());
}

}  // namespace tandem
