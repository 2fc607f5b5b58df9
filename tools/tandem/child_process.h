// Starting and stopping the cluster's processes for `tandem up`.
//
// A child is exec'd with the stop signals unblocked and PR_SET_PDEATHSIG, so
// it dies with the launcher even when the launcher is SIGKILLed. Its stdout
// is read until it prints "listening on HOST:PORT"; after that a thread
// forwards its output, prefixed with its name, to our stderr.
// Thread-safety: one owner (the launcher's main thread).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem::cli {

class ChildProcess {
 public:
  // Starts `path` with `args` and waits up to `timeout` for its listening
  // line. With `cpus`, the child runs only on those CPUs (set before exec, so
  // its OpenMP team is sized to them). `env`: "NAME=VALUE" entries added to
  // (or replacing those of) our environment for the child. Errors: Internal
  // (fork/exec failed), DeadlineExceeded (no listening line in time: the
  // child is killed), Unavailable (it exited first, or the affinity could not
  // be set).
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(const std::string& name, const std::string& path,
                                                             const std::vector<std::string>& args,
                                                             std::chrono::milliseconds timeout,
                                                             const std::vector<int>& cpus = {},
                                                             const std::vector<std::string>& env = {});
  ~ChildProcess();  // stops it if still running

  // SIGTERM, then SIGKILL after `grace`; reaps it. Idempotent.
  void Stop(std::chrono::milliseconds grace);
  // Whether it has exited (reaps it if so).
  bool Exited();

  const std::string& name() const { return name_; }
  const std::string& address() const { return address_; }
  pid_t pid() const { return pid_; }

 private:
  ChildProcess() = default;
  std::string name_;
  std::string address_;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  bool reaped_ = false;
  std::thread forwarder_;
};

}  // namespace tandem::cli
