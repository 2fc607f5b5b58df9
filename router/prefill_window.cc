// PrefillWindow (see prefill_window.h).
#include "router/prefill_window.h"

#include <algorithm>

namespace tandem {

int64_t PrefillWindow::Budget(int num_prefill_workers) const {
  return limits_.tokens_per_prefill_worker * std::max(0, num_prefill_workers);
}

bool PrefillWindow::MayStart(int64_t tokens, int num_prefill_workers) const {
  if (decode_full_ && (!probe_ || probing_)) return false;
  // An empty window takes anything, however big: never starve a request.
  return window_.empty() || window_tokens_ + tokens <= Budget(num_prefill_workers);
}

void PrefillWindow::Enter(uint64_t seq, int64_t tokens) {
  if (decode_full_) {
    probe_ = false;
    probing_ = true;
    probe_seq_ = seq;
  }
  window_[seq] = tokens;
  window_tokens_ += tokens;
  high_water_tokens_ = std::max(high_water_tokens_, window_tokens_);
}

bool PrefillWindow::Arrive(uint64_t seq, int64_t tokens, int num_prefill_workers, bool* started) {
  *started = false;
  // FIFO: with anyone waiting, a newcomer waits behind them.
  if (queue_.empty() && MayStart(tokens, num_prefill_workers)) {
    Enter(seq, tokens);
    *started = true;
    return true;
  }
  return Requeue(seq, tokens, /*bounded=*/true);
}

bool PrefillWindow::Requeue(uint64_t seq, int64_t tokens, bool bounded) {
  Leave(seq);
  ProbeOver(seq);
  if (bounded && (num_queued() >= limits_.max_queued || queued_tokens_ + tokens > limits_.max_queued_tokens)) {
    return false;
  }
  auto [it, inserted] = queue_.emplace(seq, tokens);
  if (inserted) queued_tokens_ += tokens;
  return true;
}

void PrefillWindow::Leave(uint64_t seq) {
  auto it = window_.find(seq);
  if (it == window_.end()) return;
  window_tokens_ -= it->second;
  window_.erase(it);
}

void PrefillWindow::Forget(uint64_t seq) {
  Leave(seq);
  ProbeOver(seq);
  auto it = queue_.find(seq);
  if (it == queue_.end()) return;
  queued_tokens_ -= it->second;
  queue_.erase(it);
}

std::vector<uint64_t> PrefillWindow::Drain(int num_prefill_workers) {
  std::vector<uint64_t> out;
  while (!queue_.empty() && MayStart(queue_.begin()->second, num_prefill_workers)) {
    const auto [seq, tokens] = *queue_.begin();
    queued_tokens_ -= tokens;
    queue_.erase(queue_.begin());
    Enter(seq, tokens);
    out.push_back(seq);
  }
  return out;
}

void PrefillWindow::ProbeOver(uint64_t seq) {
  if (probing_ && probe_seq_ == seq) probing_ = false;
}

void PrefillWindow::DecodeFull() { decode_full_ = true; }

void PrefillWindow::DecodeRoom() {
  if (decode_full_) probe_ = true;
}

void PrefillWindow::DecodeAdmitted() {
  decode_full_ = false;
  probe_ = false;
  probing_ = false;
}

}  // namespace tandem
