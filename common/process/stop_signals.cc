#include "common/process/stop_signals.h"

#include <pthread.h>

#include <atomic>
#include <csignal>
#include <ctime>
#include <optional>
#include <thread>

namespace tandem::process {
namespace {

std::atomic<bool> reload_blocked{false};

sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (reload_blocked.load()) sigaddset(&set, SIGHUP);
  return set;
}

}  // namespace

void BlockReloadSignal() {
  reload_blocked.store(true);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void BlockStopSignals() {
  const sigset_t set = StopSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForStopSignal() {
  const sigset_t set = StopSignals();
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

int WaitForStopSignalFor(std::chrono::milliseconds timeout) {
  const sigset_t set = StopSignals();
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(timeout).count();
  const timespec wait{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  const int sig = sigtimedwait(&set, nullptr, &wait);
  return sig > 0 ? sig : 0;
}

bool WaitUntilIdle(const std::function<bool()>& idle, std::chrono::milliseconds timeout) {
  constexpr auto kSettle = std::chrono::milliseconds(100);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::optional<std::chrono::steady_clock::time_point> idle_since;
  while (true) {
    const auto now = std::chrono::steady_clock::now();
    if (!idle()) {
      idle_since.reset();
    } else if (!idle_since) {
      idle_since = now;
    } else if (now - *idle_since >= kSettle) {
      return true;
    }
    if (now >= deadline) return idle_since.has_value();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace tandem::process
