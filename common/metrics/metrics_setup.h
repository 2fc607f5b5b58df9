// `--metrics-port` for every binary (tandem-router, the workers, `tandem
// serve`): parsing the flag and starting the scrape server on the gRPC
// host. Absent = no metrics server; 0 = a free port; the URL is printed.
// Thread-safety: single-threaded use in main().
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/metrics/metrics_server.h"
#include "common/metrics/registry.h"
#include "common/cli/cli_flags.h"

namespace tandem::cli {

struct MetricsFlag {
  std::string port;  // as typed; empty: off

  void Register(FlagSet& f) {
    f.AddString("metrics-port", &port,
                "serve Prometheus metrics at http://HOST:PORT/metrics (0: a free port; default: off)");
  }
  // The port asked for, nullopt when off. InvalidArgument naming the flag
  // for anything but an integer in [0, 65535].
  absl::StatusOr<std::optional<int>> Parse() const;
};

// Starts serving `registry` on `host` when `flag` asks for it (null when it
// does not) and prints "<program>: metrics on http://ADDR/metrics" (ADDR
// with the bound port; an IPv6 host bracketed). `host` must be a numeric
// address (the --host of the gRPC server); an IPv6 one fails where civetweb
// lacks IPv6, as Debian 12's does (see common/metrics/metrics_server.h).
absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> StartMetricsServer(const metrics::Registry* registry,
                                                                           const MetricsFlag& flag,
                                                                           const std::string& host,
                                                                           const std::string& program);

// The model label: the model directory's name ("tandem-shakespeare").
std::string ModelLabel(const std::filesystem::path& model_dir);

}  // namespace tandem::cli
