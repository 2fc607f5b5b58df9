#include "router/worker_pool.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"

namespace tandem {

void WorkerPool::Add(v1::WorkerRole role, const std::string& id, const std::string& address, bool registered,
                     bool draining, const std::string& incarnation, int32_t kv_block_size) {
  const auto now = now_();
  // A heartbeat: the same process again. (Checked again below, under the
  // same lock as the replacement: two Adds may race.)
  auto heartbeat = [&](Entry& e) {
    if (e.handle.address != address || e.handle.id != id || e.handle.incarnation != incarnation) return false;
    e.down_until = {};
    e.last_seen = now;
    e.draining = draining;
    return true;
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (Entry& e : Entries(role)) {
      if (heartbeat(e)) return;
    }
  }
  // The channel is made outside the lock (it resolves the address). With
  // mTLS it reaches only a peer holding this role's certificate, whatever
  // address the registration named.
  auto channel = tls_->Dial(address, role == v1::WORKER_ROLE_PREFILL ? tls::ClusterRole::kPrefillWorker
                                                                     : tls::ClusterRole::kDecodeWorker);
  WorkerHandle h;
  h.id = id;
  h.address = address;
  h.incarnation = incarnation;
  if (kv_block_size > 0) h.kv_block_size = kv_block_size;
  if (role == v1::WORKER_ROLE_PREFILL) {
    h.prefill = v1::PrefillWorker::NewStub(channel);
  } else {
    h.decode = v1::DecodeWorker::NewStub(channel);
  }
  std::optional<WorkerHandle> gone;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Entry>& list = Entries(role);
    for (Entry& e : list) {
      if (heartbeat(e)) return;
    }
    h.generation = ++next_generation_;
    bool replaced = false;
    for (Entry& e : list) {
      // The same address, or a registered worker's id at a new address or
      // with a new incarnation: a restarted worker replaces its old entry, so
      // nothing is routed to the dead process. Its calls in flight are the old
      // process's: they end with Done() on the old generation, which no longer
      // counts here.
      if (!replaced && (e.handle.address == address || (registered && e.registered && e.handle.id == id))) {
        if (e.handle.id == id) gone = e.handle;
        e.handle = h;
        e.in_flight = 0;
        e.in_flight_blocks = 0;
        e.registered = registered;
        e.draining = draining;
        e.last_seen = now;
        e.down_until = {};
        replaced = true;
      }
    }
    if (!replaced) {
      Entry e;
      e.handle = std::move(h);
      e.registered = registered;
      e.draining = draining;
      e.last_seen = now;
      list.push_back(std::move(e));
    }
  }
  if (gone) {
    std::lock_guard<std::mutex> lock(listener_mu_);
    if (listener_) listener_(role, *gone);
  }
}

void WorkerPool::SetGoneListener(GoneListener listener) {
  std::lock_guard<std::mutex> lock(listener_mu_);
  listener_ = std::move(listener);
}

WorkerPool::Entry* WorkerPool::Find(v1::WorkerRole role, const WorkerHandle& worker) {
  for (Entry& e : Entries(role)) {
    if (e.handle.id == worker.id && e.handle.generation == worker.generation) return &e;
  }
  return nullptr;
}

absl::StatusOr<WorkerHandle> WorkerPool::Acquire(v1::WorkerRole role, const std::vector<std::string>& exclude,
                                                 const Chooser& choose) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = now_();
  // The healthy candidates, or when there is none the failed ones.
  std::vector<Entry*> up, down;
  for (Entry& e : Entries(role)) {
    if (e.draining || std::find(exclude.begin(), exclude.end(), e.handle.id) != exclude.end()) continue;
    (e.down_until <= now && e.Live(now) ? up : down).push_back(&e);
  }
  const std::vector<Entry*>& offered = up.empty() ? down : up;
  if (offered.empty()) {
    return absl::UnavailableError(absl::StrCat("no ", role == v1::WORKER_ROLE_PREFILL ? "prefill" : "decode",
                                               " worker available"));
  }
  Choice choice;
  if (choose) {
    std::vector<Candidate> candidates;
    candidates.reserve(offered.size());
    for (const Entry* e : offered) candidates.push_back({&e->handle, e->in_flight, e->in_flight_blocks});
    choice = choose(candidates);
    if (choice.index < 0 || choice.index >= static_cast<int>(offered.size())) choice = {0, choice.load_blocks};
  } else {
    for (int i = 1; i < static_cast<int>(offered.size()); ++i) {
      if (offered[i]->in_flight < offered[choice.index]->in_flight) choice.index = i;
    }
  }
  Entry& best = *offered[choice.index];
  ++best.in_flight;
  best.in_flight_blocks += choice.load_blocks;
  WorkerHandle h = best.handle;
  h.load_blocks = choice.load_blocks;
  return h;
}

void WorkerPool::Done(v1::WorkerRole role, const WorkerHandle& worker) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry* e = Find(role, worker);
  if (e != nullptr && e->in_flight > 0) {
    --e->in_flight;
    e->in_flight_blocks = std::max<int64_t>(0, e->in_flight_blocks - worker.load_blocks);
  }
}

void WorkerPool::MarkFailed(v1::WorkerRole role, const WorkerHandle& worker, std::chrono::milliseconds cooldown) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry* e = Find(role, worker);
  if (e != nullptr) e->down_until = now_() + cooldown;
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
