#include "tools/tandem/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <iostream>
#include <regex>

#include "absl/strings/str_cat.h"

namespace tandem::cli {

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(const std::string& name, const std::string& path,
                                                                  const std::vector<std::string>& args,
                                                                  std::chrono::milliseconds timeout,
                                                                  const std::vector<int>& cpus,
                                                                  const std::vector<std::string>& env) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  std::vector<std::string> argv_storage = {path};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  // The child's environment, built before fork (the child may only make
  // async-signal-safe calls): ours, with `env`'s names replaced or added.
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string name_eq = entry.substr(0, entry.find('=') + 1);
    bool replaced = false;
    for (const std::string& x : env) replaced = replaced || x.compare(0, name_eq.size(), name_eq) == 0;
    if (!replaced) env_storage.push_back(entry);
  }
  env_storage.insert(env_storage.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (std::string& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);
  cpu_set_t cpu_set;
  CPU_ZERO(&cpu_set);
  for (int c : cpus) CPU_SET(c, &cpu_set);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    // Child: die with the launcher; take the default signal mask back.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (!cpus.empty() && sched_setaffinity(0, sizeof cpu_set, &cpu_set) != 0) _exit(126);
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    execve(path.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  close(fds[1]);
  auto child = std::unique_ptr<ChildProcess>(new ChildProcess());
  child->name_ = name;
  child->pid_ = pid;
  child->stdout_fd_ = fds[0];

  // Read lines until the listening line (bounded by `timeout`).
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const std::regex listening("listening on ([0-9A-Za-z.:\\[\\]-]+:[0-9]+)");
  std::string buffer;
  while (child->address_.empty()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      child->Stop(std::chrono::milliseconds(1000));
      return absl::DeadlineExceededError(absl::StrCat(name, " did not start listening in ", timeout.count(), " ms"));
    }
    pollfd p{child->stdout_fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 200))) <= 0) continue;
    char chunk[4096];
    const ssize_t n = read(child->stdout_fd_, chunk, sizeof chunk);
    if (n <= 0) {
      child->Stop(std::chrono::milliseconds(1000));
      return absl::UnavailableError(absl::StrCat(name, " exited before listening (", path, ")"));
    }
    buffer.append(chunk, static_cast<size_t>(n));
    std::smatch m;
    if (std::regex_search(buffer, m, listening)) child->address_ = m[1];
  }
  std::cerr << "[" << name << "] " << buffer << std::flush;
  const int fd = child->stdout_fd_;
  child->forwarder_ = std::thread([fd, name] {
    char chunk[4096];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof chunk)) > 0) std::cerr << "[" << name << "] " << std::string(chunk, n) << std::flush;
  });
  return child;
}

bool ChildProcess::Exited() {
  if (reaped_) return true;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) reaped_ = true;
  return reaped_;
}

void ChildProcess::Stop(std::chrono::milliseconds grace) {
  if (!reaped_) {
    kill(pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + grace;
    while (!Exited() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!Exited()) {
      kill(pid_, SIGKILL);
      int status = 0;
      waitpid(pid_, &status, 0);
      reaped_ = true;
    }
  }
  if (forwarder_.joinable()) forwarder_.join();  // the pipe closed with the child
  if (stdout_fd_ >= 0) {
    close(stdout_fd_);
    stdout_fd_ = -1;
  }
}

ChildProcess::~ChildProcess() { Stop(std::chrono::milliseconds(3000)); }

}  // namespace tandem::cli
