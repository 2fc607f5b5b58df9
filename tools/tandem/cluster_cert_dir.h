// A directory of cluster certificates as `tandem certs` writes it and
// `tandem up` reads it: ca.crt (+ ca.key), and <stem>.crt/<stem>.key for
// the stems router, prefill-worker, decode-worker. Keys are written 0600,
// certificates 0644; nothing existing is followed or replaced unless asked.
// Thread-safety: functions of their arguments and the file system.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/tls/cluster_certs.h"

namespace tandem::cli {

// "router", "prefill-worker", "decode-worker".
const char* CertStem(tls::ClusterRole role);

struct ClusterCertOptions {
  std::vector<std::string> extra_dns;  // in every role certificate
  std::vector<std::string> extra_ips;
  std::chrono::hours validity{24 * 365};
  bool write_ca_key = true;  // false: the CA can sign nothing more once this returns
  bool force = false;        // replace files that exist
};

// Makes a new CA and one certificate per role into `dir` (which must
// exist). InvalidArgument for a malformed --dns/--ip value;
// FailedPrecondition for a file that exists (without `force`).
absl::Status WriteClusterCerts(const std::filesystem::path& dir, const ClusterCertOptions& options);

// The file names `tandem certs` gives a role's certificate and key, and the CA's certificate.
std::filesystem::path CertFile(const std::filesystem::path& dir, tls::ClusterRole role);
std::filesystem::path KeyFile(const std::filesystem::path& dir, tls::ClusterRole role);
std::filesystem::path CaFile(const std::filesystem::path& dir);

}  // namespace tandem::cli
