// ChildProcess: a test helper that runs a binary with piped stdin/stdout
// (posix_spawn, so no fork of a process that holds UCX state), reads lines
// with a timeout and always reaps the child: the destructor SIGKILLs and
// waits for it if it is still there, so a failing test leaves no strays.
// Thread-safety: thread-compatible.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

extern char** environ;

namespace tandem::kv_transfer_test {

class ChildProcess {
 public:
  // Starts `path args...` with the parent's environment plus `extra_env`
  // ("NAME=value" entries, which win over inherited ones).
  static absl::StatusOr<ChildProcess> Spawn(const std::string& path,
                                            const std::vector<std::string>& args,
                                            const std::vector<std::string>& extra_env) {
    int in[2];
    int out[2];
    if (pipe2(in, O_CLOEXEC) != 0) return absl::InternalError("pipe");
    if (pipe2(out, O_CLOEXEC) != 0) {
      close(in[0]);
      close(in[1]);
      return absl::InternalError("pipe");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);

    std::vector<std::string> env_strings = extra_env;
    for (char** e = environ; *e != nullptr; ++e) {
      std::string_view entry(*e);
      const std::string_view name = entry.substr(0, entry.find('='));
      bool overridden = false;
      for (const auto& extra : extra_env) {
        if (std::string_view(extra).substr(0, extra.find('=')) == name) overridden = true;
      }
      if (!overridden) env_strings.emplace_back(entry);
    }
    std::vector<char*> env;
    for (auto& s : env_strings) env.push_back(s.data());
    env.push_back(nullptr);
    std::vector<std::string> argv_strings = {path};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& s : argv_strings) argv.push_back(s.data());
    argv.push_back(nullptr);

    pid_t pid = -1;
    const int rc = posix_spawn(&pid, path.c_str(), &actions, nullptr, argv.data(), env.data());
    posix_spawn_file_actions_destroy(&actions);
    close(in[0]);
    close(out[1]);
    if (rc != 0) {
      close(in[1]);
      close(out[0]);
      return absl::InternalError(absl::StrCat("posix_spawn ", path, ": ", std::strerror(rc)));
    }
    return ChildProcess(pid, in[1], out[0]);
  }

  ChildProcess(ChildProcess&& other) noexcept { *this = std::move(other); }
  ChildProcess& operator=(ChildProcess&& other) noexcept {
    std::swap(pid_, other.pid_);
    std::swap(stdin_fd_, other.stdin_fd_);
    std::swap(stdout_fd_, other.stdout_fd_);
    std::swap(buffer_, other.buffer_);
    return *this;
  }
  ~ChildProcess() {
    Kill();
    if (stdin_fd_ >= 0) close(stdin_fd_);
    if (stdout_fd_ >= 0) close(stdout_fd_);
  }

  pid_t pid() const { return pid_; }

  // One line of the child's stdout, without the newline. DeadlineExceeded
  // after `timeout`, Unavailable at end of file.
  absl::StatusOr<std::string> ReadLine(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (true) {
      const size_t newline = buffer_.find('\n');
      if (newline != std::string::npos) {
        std::string line = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 1);
        return line;
      }
      const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
      if (left_ms <= 0) return absl::DeadlineExceededError("child printed no line in time");
      pollfd pfd{stdout_fd_, POLLIN, 0};
      const int ready = poll(&pfd, 1, static_cast<int>(left_ms));
      if (ready < 0 && errno != EINTR) return absl::InternalError("poll");
      if (ready <= 0) continue;
      char chunk[4096];
      const ssize_t n = read(stdout_fd_, chunk, sizeof(chunk));
      if (n == 0) return absl::UnavailableError("child closed stdout");
      if (n < 0 && errno != EINTR) return absl::InternalError("read");
      if (n > 0) buffer_.append(chunk, static_cast<size_t>(n));
    }
  }

  // Callers should ignore SIGPIPE: a dead child makes this EPIPE.
  absl::Status WriteLine(std::string_view line) {
    std::string data = std::string(line) + "\n";
    if (write(stdin_fd_, data.data(), data.size()) != static_cast<ssize_t>(data.size())) {
      return absl::UnavailableError("cannot write to the child");
    }
    return absl::OkStatus();
  }

  // Waits for exit; returns the exit code (or 128 + signal). On timeout the
  // child is killed and reaped and DeadlineExceeded returned.
  absl::StatusOr<int> Wait(absl::Duration timeout) {
    if (pid_ <= 0) return absl::FailedPreconditionError("no child");
    const absl::Time deadline = absl::Now() + timeout;
    while (true) {
      int status = 0;
      const pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (r < 0 && errno != EINTR) return absl::InternalError("waitpid");
      if (absl::Now() >= deadline) {
        Kill();
        return absl::DeadlineExceededError("child did not exit in time; killed");
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
  }

  // SIGKILL and reap; idempotent.
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }

 private:
  ChildProcess(pid_t pid, int stdin_fd, int stdout_fd)
      : pid_(pid), stdin_fd_(stdin_fd), stdout_fd_(stdout_fd) {}

  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  int stdout_fd_ = -1;
  std::string buffer_;
};

}  // namespace tandem::kv_transfer_test
