#include "router/prefix_index.h"

namespace tandem {

void PrefixIndex::Stored(const std::string& worker, std::span<const uint64_t> hashes) {
  std::lock_guard<std::mutex> lock(mu_);
  Worker& w = workers_[worker];
  for (uint64_t h : hashes) {
    auto it = w.where.find(h);
    if (it != w.where.end()) {
      w.order.splice(w.order.end(), w.order, it->second);  // most recent now
      continue;
    }
    w.order.push_back(h);
    w.where.emplace(h, std::prev(w.order.end()));
    if (static_cast<int64_t>(w.order.size()) > max_blocks_) {
      w.where.erase(w.order.front());
      w.order.pop_front();
    }
  }
}

void PrefixIndex::Evicted(const std::string& worker, std::span<const uint64_t> hashes) {
  std::lock_guard<std::mutex> lock(mu_);
  auto wit = workers_.find(worker);
  if (wit == workers_.end()) return;
  Worker& w = wit->second;
  for (uint64_t h : hashes) {
    auto it = w.where.find(h);
    if (it == w.where.end()) continue;
    w.order.erase(it->second);
    w.where.erase(it);
  }
}

void PrefixIndex::DropWorker(const std::string& worker) {
  std::lock_guard<std::mutex> lock(mu_);
  workers_.erase(worker);
}

int64_t PrefixIndex::Overlap(const std::string& worker, std::span<const uint64_t> prompt) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto wit = workers_.find(worker);
  if (wit == workers_.end()) return 0;
  int64_t n = 0;
  for (uint64_t h : prompt) {
    if (!wit->second.where.contains(h)) break;
    ++n;
  }
  return n;
}

int64_t PrefixIndex::NumBlocks(const std::string& worker) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto wit = workers_.find(worker);
  return wit == workers_.end() ? 0 : static_cast<int64_t>(wit->second.order.size());
}

}  // namespace tandem
