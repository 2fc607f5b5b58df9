#include "common/process/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <iostream>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace tandem::process {

namespace {

// Our environment with `overrides`' names replaced or added.
std::vector<std::string> ChildEnvironment(const std::vector<std::string>& overrides) {
  std::vector<std::string> out;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string name_eq = entry.substr(0, entry.find('=') + 1);
    bool replaced = false;
    for (const std::string& x : overrides) replaced = replaced || x.compare(0, name_eq.size(), name_eq) == 0;
    if (!replaced) out.push_back(entry);
  }
  out.insert(out.end(), overrides.begin(), overrides.end());
  return out;
}

std::vector<char*> Pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(const std::string& path,
                                                                  const std::vector<std::string>& args,
                                                                  const ChildOptions& options) {
  // Everything the child needs is built before the fork: between fork and
  // exec it may only make async-signal-safe calls.
  std::vector<std::string> argv_storage = {path};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv = Pointers(argv_storage);
  std::vector<std::string> env_storage = ChildEnvironment(options.env);
  std::vector<char*> envp = Pointers(env_storage);
  cpu_set_t cpu_set;
  CPU_ZERO(&cpu_set);
  for (int c : options.cpus) CPU_SET(c, &cpu_set);

  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  int in[2] = {-1, -1};
  if (options.pipe_stdin && pipe2(in, O_CLOEXEC) != 0) {
    close(out[0]);
    close(out[1]);
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    const int err = errno;
    for (int fd : {out[0], out[1], in[0], in[1]}) {
      if (fd >= 0) close(fd);
    }
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(err)));
  }
  if (pid == 0) {
    if (options.die_with_parent) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(1);  // the parent died before prctl
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (!options.cpus.empty() && sched_setaffinity(0, sizeof cpu_set, &cpu_set) != 0) _exit(126);
    dup2(out[1], STDOUT_FILENO);  // dup2 clears O_CLOEXEC on the copy
    if (in[0] >= 0) dup2(in[0], STDIN_FILENO);
    execve(path.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  close(out[1]);
  if (in[0] >= 0) close(in[0]);
  auto child = std::unique_ptr<ChildProcess>(new ChildProcess());
  child->pid_ = pid;
  child->stdout_fd_ = out[0];
  child->stdin_fd_ = in[1];
  return child;
}

absl::StatusOr<std::string> ChildProcess::ReadLine(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const size_t newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      return line;
    }
    if (stdout_fd_ < 0) return absl::UnavailableError("the child's output is closed");
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return absl::DeadlineExceededError("the child printed no line in time");
    pollfd p{stdout_fd_, POLLIN, 0};
    const int ready = poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (ready < 0 && errno != EINTR) return absl::InternalError(absl::StrCat("poll: ", std::strerror(errno)));
    if (ready <= 0) continue;
    char chunk[4096];
    const ssize_t n = read(stdout_fd_, chunk, sizeof chunk);
    if (n == 0) return absl::UnavailableError("the child closed its output (exited?)");
    if (n < 0 && errno != EINTR) return absl::InternalError(absl::StrCat("read: ", std::strerror(errno)));
    if (n > 0) buffer_.append(chunk, static_cast<size_t>(n));
  }
}

absl::Status ChildProcess::WriteLine(std::string_view line) {
  if (stdin_fd_ < 0) return absl::FailedPreconditionError("the child has no stdin pipe");
  const std::string data = std::string(line) + "\n";
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = write(stdin_fd_, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::UnavailableError("cannot write to the child");
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

void ChildProcess::ForwardOutput(const std::string& prefix) {
  if (forwarder_.joinable() || stdout_fd_ < 0) return;
  if (!buffer_.empty()) std::cerr << "[" << prefix << "] " << buffer_ << std::flush;
  buffer_.clear();
  const int fd = stdout_fd_;
  forwarder_ = std::thread([fd, prefix] {
    char chunk[4096];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof chunk)) > 0 || (n < 0 && errno == EINTR)) {
      if (n > 0) std::cerr << "[" << prefix << "] " << std::string(chunk, static_cast<size_t>(n)) << std::flush;
    }
  });
}

void ChildProcess::Reaped(int wait_status) {
  reaped_ = true;
  exit_code_ = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status);
}

bool ChildProcess::Exited() {
  if (reaped_ || pid_ <= 0) return true;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) Reaped(status);
  return reaped_;
}

absl::StatusOr<int> ChildProcess::Wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return absl::FailedPreconditionError("no child");
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!Exited()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      Kill();
      return absl::DeadlineExceededError("the child did not exit in time; killed");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return exit_code_;
}

void ChildProcess::Stop(std::chrono::milliseconds grace) {
  if (!Exited()) {
    if (grace.count() > 0) {
      kill(pid_, SIGTERM);
      const auto deadline = std::chrono::steady_clock::now() + grace;
      while (!Exited() && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    if (!Exited()) {
      kill(pid_, SIGKILL);
      int status = 0;
      while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
      Reaped(status);
    }
  }
  CloseFds();
}

void ChildProcess::CloseFds() {
  if (forwarder_.joinable()) forwarder_.join();  // the pipe closed with the child
  for (int* fd : {&stdout_fd_, &stdin_fd_}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
}

ChildProcess::~ChildProcess() { Stop(std::chrono::milliseconds(3000)); }

}  // namespace tandem::process
