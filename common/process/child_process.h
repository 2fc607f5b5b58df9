// ChildProcess: one way to run another Tandem binary, for the launcher
// (`tandem up`) and for tests that need a second process.
//
// The child is exec'd with the stop signals unblocked (the parent may have
// blocked them for sigwait) and, by default, PR_SET_PDEATHSIG, so it dies
// with its parent even when the parent is SIGKILLed. Its stdout is a pipe
// the owner reads line by line (ReadLine, bounded) and may later hand to a
// thread that copies it, prefixed, to our stderr (ForwardOutput). The child
// is always reaped: the destructor stops it (SIGTERM, then SIGKILL) if it is
// still running, so a failing caller leaves no strays.
//
// Why fork and not posix_spawn: the launcher needs PR_SET_PDEATHSIG and a CPU
// affinity set before exec, which posix_spawn cannot express. Between fork
// and exec the child makes only async-signal-safe calls (everything it needs
// is prepared before the fork).
// Thread-safety: one owner; ForwardOutput's thread only reads the pipe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tandem::process {

struct ChildOptions {
  // "NAME=VALUE" entries added to (or replacing those of) our environment.
  std::vector<std::string> env;
  // When not empty, the child runs only on these CPUs (set before exec, so an
  // OpenMP team is sized to them).
  std::vector<int> cpus;
  // SIGTERM the child when its parent dies.
  bool die_with_parent = true;
  // Give the child a stdin pipe for WriteLine (otherwise it inherits ours).
  bool pipe_stdin = false;
};

class ChildProcess {
 public:
  // Starts `path` with `args`. Internal when the pipe or fork fails;
  // Unavailable when the child cannot exec `path` or set its affinity (its
  // exit code 127 / 126 is then seen by ReadLine as end of file).
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(const std::string& path,
                                                             const std::vector<std::string>& args,
                                                             const ChildOptions& options = {});
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();  // Stop(3 s) if still running

  // One line of the child's stdout, without the newline. DeadlineExceeded
  // after `timeout`, Unavailable at end of file (the child closed stdout or
  // exited). Not after ForwardOutput.
  absl::StatusOr<std::string> ReadLine(std::chrono::milliseconds timeout);
  // Writes `line` and a newline to the child's stdin (ChildOptions::pipe_stdin).
  // Unavailable when the child is gone. Callers should ignore SIGPIPE.
  absl::Status WriteLine(std::string_view line);

  // From now on a thread copies the child's stdout (what ReadLine had
  // buffered first) to our stderr, each chunk prefixed with "[prefix] ".
  void ForwardOutput(const std::string& prefix);

  // Waits for the child to exit: its exit code, or 128 + the signal that
  // ended it. On timeout the child is killed and reaped, DeadlineExceeded.
  absl::StatusOr<int> Wait(std::chrono::milliseconds timeout);
  // SIGTERM, then SIGKILL after `grace`; reaps it. Idempotent.
  void Stop(std::chrono::milliseconds grace);
  // SIGKILL and reap. Idempotent.
  void Kill() { Stop(std::chrono::milliseconds(0)); }
  // Whether it has exited (reaps it if so).
  bool Exited();

  pid_t pid() const { return pid_; }
  // How it ended (as Wait returns it); -1 while running or unknown.
  int exit_code() const { return exit_code_; }

 private:
  ChildProcess() = default;
  void Reaped(int wait_status);
  void CloseFds();

  pid_t pid_ = -1;
  bool reaped_ = false;
  int exit_code_ = -1;
  int stdout_fd_ = -1;
  int stdin_fd_ = -1;
  std::string buffer_;  // read from stdout, not yet returned as a line
  std::thread forwarder_;
};

}  // namespace tandem::process
