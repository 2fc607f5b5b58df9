// The flags that say how a process speaks gRPC inside the cluster, shared
// by tandem-router, tandem-prefill-worker and tandem-decode-worker:
// --tls-ca/--tls-cert/--tls-key (mTLS with a role certificate, e.g. from
// `tandem certs` or cert-manager: ca.crt, tls.crt, tls.key), or
// --insecure-cluster (plaintext, logged loudly). One of the two is required:
// plaintext is never what a process falls into by omission.
// Thread-safety: single-threaded use in main().
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/cli/cli_flags.h"
#include "common/grpc/cluster_tls.h"

namespace tandem::cli {

struct ClusterTlsFlags {
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  bool insecure = false;

  void Register(FlagSet& f);
  // The process's ClusterTls as `role`. InvalidArgument naming the flags
  // when none or only some of the three files are given without
  // --insecure-cluster, when --insecure-cluster comes with files, or when
  // the files do not make a valid role certificate (ClusterTls::FromPem).
  // `program` prefixes the warning printed (stderr) for --insecure-cluster.
  absl::StatusOr<std::shared_ptr<const ClusterTls>> Load(tls::ClusterRole role, const std::string& program) const;
};

}  // namespace tandem::cli
