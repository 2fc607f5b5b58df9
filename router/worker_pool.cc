#include "router/worker_pool.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"

namespace tandem {

void WorkerPool::Add(v1::WorkerRole role, const std::string& id, const std::string& address, bool registered,
                     bool draining) {
  const auto now = now_();
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (Entry& e : Entries(role)) {
      if (e.handle.address == address && e.handle.id == id) {  // a heartbeat: it is alive
        e.down_until = {};
        e.last_seen = now;
        e.draining = draining;
        return;
      }
    }
  }
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  WorkerHandle h{id, address, nullptr, nullptr};
  if (role == v1::WORKER_ROLE_PREFILL) {
    h.prefill = v1::PrefillWorker::NewStub(channel);
  } else {
    h.decode = v1::DecodeWorker::NewStub(channel);
  }
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Entry>& list = Entries(role);
  for (Entry& e : list) {
    // The same address, or a registered worker's id at a new address: a
    // restarted worker (a new incarnation) replaces its old entry, so nothing
    // is routed to the dead process. Its in-flight count carries over, since
    // the old calls still end with Done(id).
    if (e.handle.address == address || (registered && e.registered && e.handle.id == id)) {
      e.handle = std::move(h);
      e.registered = registered;
      e.draining = draining;
      e.last_seen = now;
      e.down_until = {};
      return;
    }
  }
  Entry e;
  e.handle = std::move(h);
  e.registered = registered;
  e.draining = draining;
  e.last_seen = now;
  list.push_back(std::move(e));
}

absl::StatusOr<WorkerHandle> WorkerPool::Acquire(v1::WorkerRole role, const std::vector<std::string>& exclude) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = now_();
  Entry* best = nullptr;
  auto better = [now](const Entry& a, const Entry* b) {
    if (b == nullptr) return true;
    const bool a_up = a.down_until <= now && a.Live(now), b_up = b->down_until <= now && b->Live(now);
    if (a_up != b_up) return a_up;
    return a.in_flight < b->in_flight;
  };
  for (Entry& e : Entries(role)) {
    if (e.draining || std::find(exclude.begin(), exclude.end(), e.handle.id) != exclude.end()) continue;
    if (better(e, best)) best = &e;
  }
  if (best == nullptr) {
    return absl::UnavailableError(absl::StrCat("no ", role == v1::WORKER_ROLE_PREFILL ? "prefill" : "decode",
                                               " worker available"));
  }
  ++best->in_flight;
  return best->handle;
}

void WorkerPool::Done(v1::WorkerRole role, const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  for (Entry& e : Entries(role)) {
    if (e.handle.id == id && e.in_flight > 0) {
      --e.in_flight;
      return;
    }
  }
}

void WorkerPool::MarkFailed(v1::WorkerRole role, const std::string& id, std::chrono::milliseconds cooldown) {
  std::lock_guard<std::mutex> lock(mu_);
  for (Entry& e : Entries(role)) {
    if (e.handle.id == id) e.down_until = now_() + cooldown;
  }
}

int WorkerPool::NumWorkers(v1::WorkerRole role) const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(Entries(role).size());
}

int WorkerPool::NumServing(v1::WorkerRole role) const {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = now_();
  const std::vector<Entry>& list = Entries(role);
  return static_cast<int>(
      std::count_if(list.begin(), list.end(), [now](const Entry& e) { return e.Live(now) && !e.draining; }));
}

bool WorkerPool::Ready() const {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = now_();
  auto any = [now](const std::vector<Entry>& list) {
    return std::any_of(list.begin(), list.end(), [now](const Entry& e) { return e.Live(now) && !e.draining; });
  };
  return any(prefill_) && any(decode_);
}

std::vector<v1::WorkerInfo> WorkerPool::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::WorkerInfo> out;
  const auto now = now_();
  for (v1::WorkerRole role : {v1::WORKER_ROLE_PREFILL, v1::WORKER_ROLE_DECODE}) {
    for (const Entry& e : Entries(role)) {
      if (!e.Live(now)) continue;
      v1::WorkerInfo info;
      info.set_worker_id(e.handle.id);
      info.set_role(role);
      info.set_address(e.handle.address);
      info.set_requests_in_flight(static_cast<uint32_t>(e.in_flight));
      info.set_draining(e.draining);
      out.push_back(std::move(info));
    }
  }
  return out;
}

std::vector<WorkerPool::Health> WorkerPool::AllHealth() const {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = now_();
  std::vector<Health> out;
  for (v1::WorkerRole role : {v1::WORKER_ROLE_PREFILL, v1::WORKER_ROLE_DECODE}) {
    for (const Entry& e : Entries(role)) {
      out.push_back({e.handle.id, role, e.Live(now) && now >= e.down_until, e.in_flight});
    }
  }
  return out;
}

std::vector<WorkerHandle> WorkerPool::All(v1::WorkerRole role) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<WorkerHandle> out;
  for (const Entry& e : Entries(role)) out.push_back(e.handle);
  return out;
}

}  // namespace tandem
