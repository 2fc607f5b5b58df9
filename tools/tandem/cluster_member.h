// One process of the cluster `tandem up` runs: a ChildProcess that has
// printed its "listening on HOST:PORT" line (the router prints its
// "cluster listener on HOST:PORT" line before it), with its output
// forwarded to our stderr prefixed by its name.
// Thread-safety: one owner (the launcher's main thread).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/process/child_process.h"

namespace tandem::cli {

struct ClusterMember {
  std::string name;
  std::string address;          // from its listening line
  std::string cluster_address;  // the router's control plane, from its cluster listener line; else empty
  std::string http_address;     // the router's OpenAI HTTP API, from its line; else empty
  std::unique_ptr<process::ChildProcess> process;
  // How it was started (a restart starts it the same way).
  std::string path;
  std::vector<std::string> args;
  process::ChildOptions options;
  std::chrono::steady_clock::time_point started;
};

// Starts `path` with `args` and waits up to `timeout` for its listening
// line. DeadlineExceeded (no line in time: the child is stopped),
// Unavailable (it exited first), Internal (it could not be started).
absl::StatusOr<ClusterMember> StartClusterMember(const std::string& name, const std::string& path,
                                                 const std::vector<std::string>& args,
                                                 std::chrono::milliseconds timeout,
                                                 const process::ChildOptions& options = {});

// Starts `member` again as it was started before (its old process must have
// exited); on success its process, addresses and start time are the new ones.
absl::Status RestartClusterMember(ClusterMember& member, std::chrono::milliseconds timeout);

}  // namespace tandem::cli
