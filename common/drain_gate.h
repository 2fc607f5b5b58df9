// DrainGate: how a server stops taking work without dropping what it has.
// Each call that must finish before the process exits holds a ticket from
// Enter(); StartDraining() (on SIGTERM) makes Enter() refuse new calls, and
// main() waits for the tickets to be returned, up to its drain timeout.
// Thread-safety: all methods are thread-safe; tickets may be released on any
// thread. The gate must outlive every ticket (declare it before the server).
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>

namespace tandem {

class DrainGate {
 public:
  // Returned to the gate when destroyed (a shared_ptr so that gRPC closures,
  // which must be copyable, can hold it until the call is done).
  class Ticket {
   public:
    explicit Ticket(DrainGate* gate) : gate_(gate) {}
    ~Ticket() { gate_->Leave(); }
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;

   private:
    DrainGate* const gate_;
  };

  DrainGate() = default;
  // Waits for a Leave() in progress on another thread (the last ticket may
  // be returned just as the owner, having seen num_in_flight() == 0, tears
  // the gate down: the notify must finish before the condition variable goes).
  ~DrainGate() { std::lock_guard<std::mutex> lock(mu_); }
  DrainGate(const DrainGate&) = delete;
  DrainGate& operator=(const DrainGate&) = delete;

  // A ticket for one call, or null once draining (the caller answers
  // UNAVAILABLE: the client should retry elsewhere).
  std::shared_ptr<Ticket> Enter() {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_) return nullptr;
    ++num_in_flight_;
    return std::make_shared<Ticket>(this);
  }

  // A ticket even while draining, for work that continues a call accepted
  // before (a decode worker's Decode stream of a reservation it admitted).
  std::shared_ptr<Ticket> Hold() {
    std::lock_guard<std::mutex> lock(mu_);
    ++num_in_flight_;
    return std::make_shared<Ticket>(this);
  }

  // From now on Enter() refuses. Idempotent.
  void StartDraining() {
    std::lock_guard<std::mutex> lock(mu_);
    draining_ = true;
  }

  bool draining() const {
    std::lock_guard<std::mutex> lock(mu_);
    return draining_;
  }

  int num_in_flight() const {
    std::lock_guard<std::mutex> lock(mu_);
    return num_in_flight_;
  }

  // Blocks until no ticket is held or `timeout` passes (so a caller polling
  // other conditions too can pass a short one); true when none is held.
  bool WaitIdle(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return idle_.wait_for(lock, timeout, [this] { return num_in_flight_ == 0; });
  }

 private:
  void Leave() {
    std::lock_guard<std::mutex> lock(mu_);
    if (--num_in_flight_ == 0) idle_.notify_all();
  }

  mutable std::mutex mu_;
  std::condition_variable idle_;
  bool draining_ = false;
  int num_in_flight_ = 0;
};

}  // namespace tandem
