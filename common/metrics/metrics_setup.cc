// --metrics-port (see metrics_setup.h).
#include "common/metrics/metrics_setup.h"

#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace tandem::cli {

absl::StatusOr<std::optional<int>> MetricsFlag::Parse() const {
  if (port.empty()) return std::optional<int>();
  int value = 0;
  if (!absl::SimpleAtoi(port, &value) || value < 0 || value > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics-port: '", port, "' is not a port (an integer in [0, 65535]; 0 picks a free one)"));
  }
  return std::optional<int>(value);
}

absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> StartMetricsServer(const metrics::Registry* registry,
                                                                           const MetricsFlag& flag,
                                                                           const std::string& host,
                                                                           const std::string& program) {
  absl::StatusOr<std::optional<int>> port = flag.Parse();
  if (!port.ok()) return port.status();
  if (!port->has_value()) return std::unique_ptr<metrics::MetricsServer>();
  absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> server =
      metrics::MetricsServer::Start(registry, host, **port);
  if (!server.ok()) {
    return absl::Status(server.status().code(), absl::StrCat("--metrics-port: ", server.status().message()));
  }
  std::cout << program << ": metrics on http://" << (*server)->address() << "/metrics" << std::endl;
  return server;
}

std::string ModelLabel(const std::filesystem::path& model_dir) {
  std::filesystem::path p = model_dir.lexically_normal();
  if (p.filename().empty()) p = p.parent_path();  // "dir/" normalizes to "dir/"
  const std::string name = p.filename().string();
  return name.empty() ? "model" : name;
}

}  // namespace tandem::cli
