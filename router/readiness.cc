#include "router/readiness.h"

namespace tandem {

void Readiness::Attach(std::function<void(bool)> publish) {
  std::lock_guard<std::mutex> lock(mu_);
  publish_ = std::move(publish);
  published_ = pool_->Ready() && !gate_->draining();
  publish_(published_);
}

bool Readiness::Update() {
  std::lock_guard<std::mutex> lock(mu_);
  const bool ready = pool_->Ready() && !gate_->draining();
  if (publish_ && ready != published_) {
    published_ = ready;
    publish_(ready);
  }
  return ready;
}

}  // namespace tandem
