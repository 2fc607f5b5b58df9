#include "tools/tandem/cluster_member.h"

#include <iostream>
#include <regex>

#include "absl/strings/str_cat.h"

namespace tandem::cli {

absl::StatusOr<ClusterMember> StartClusterMember(const std::string& name, const std::string& path,
                                                 const std::vector<std::string>& args,
                                                 std::chrono::milliseconds timeout,
                                                 const process::ChildOptions& options) {
  absl::StatusOr<std::unique_ptr<process::ChildProcess>> child = process::ChildProcess::Start(path, args, options);
  if (!child.ok()) return absl::Status(child.status().code(), absl::StrCat(name, ": ", child.status().message()));
  ClusterMember member{name, "", "", "", *std::move(child), path, args, options, std::chrono::steady_clock::now()};
  const std::regex listening("listening on ([0-9A-Za-z.:\\[\\]-]+:[0-9]+)");
  const std::regex cluster_listener("cluster listener on ([0-9A-Za-z.:\\[\\]-]+:[0-9]+)");
  const std::regex http_api("OpenAI HTTP API on ([0-9A-Za-z.:\\[\\]-]+:[0-9]+)");
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (member.address.empty()) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    absl::StatusOr<std::string> line = member.process->ReadLine(std::max(left, std::chrono::milliseconds(0)));
    if (!line.ok()) {
      member.process->Stop(std::chrono::milliseconds(1000));
      if (absl::IsDeadlineExceeded(line.status())) {
        return absl::DeadlineExceededError(absl::StrCat(name, " did not start listening in ", timeout.count(), " ms"));
      }
      return absl::UnavailableError(absl::StrCat(name, " exited before listening (", path, ", exit code ",
                                                 member.process->exit_code(), ")"));
    }
    std::cerr << "[" << name << "] " << *line << "\n";
    std::smatch m;
    if (std::regex_search(*line, m, listening)) member.address = m[1];
    if (std::regex_search(*line, m, cluster_listener)) member.cluster_address = m[1];
    if (std::regex_search(*line, m, http_api)) member.http_address = m[1];
  }
  std::cerr << std::flush;
  member.process->ForwardOutput(name);
  return member;
}

absl::Status RestartClusterMember(ClusterMember& member, std::chrono::milliseconds timeout) {
  absl::StatusOr<ClusterMember> fresh = StartClusterMember(member.name, member.path, member.args, timeout, member.options);
  if (!fresh.ok()) return fresh.status();
  member = *std::move(fresh);
  return absl::OkStatus();
}

}  // namespace tandem::cli
