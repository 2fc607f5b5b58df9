#include "common/grpc/cluster_tls_flags.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/cli/flag_files.h"

namespace tandem::cli {

void ClusterTlsFlags::Register(FlagSet& f) {
  f.AddString("tls-ca", &ca_file,
              "mTLS inside the cluster: the cluster CA's PEM certificate (e.g. ca.crt from `tandem certs`)");
  f.AddString("tls-cert", &cert_file,
              "mTLS inside the cluster: this process's PEM certificate, naming its role (tandem-router, "
              "tandem-prefill-worker or tandem-decode-worker) as a DNS SAN");
  f.AddString("tls-key", &key_file, "mTLS inside the cluster: the PEM private key of --tls-cert");
  f.AddBool("insecure-cluster", &insecure,
            "plaintext gRPC inside the cluster instead of --tls-ca/--tls-cert/--tls-key: anyone who reaches the "
            "cluster's ports can register workers and read prompts (only on a network nobody else reaches)");
}

absl::StatusOr<std::shared_ptr<const ClusterTls>> ClusterTlsFlags::Load(tls::ClusterRole role,
                                                                       const std::string& program) const {
  const int given = !ca_file.empty() + !cert_file.empty() + !key_file.empty();
  if (insecure) {
    if (given > 0) {
      return absl::InvalidArgumentError("--insecure-cluster cannot go with --tls-ca/--tls-cert/--tls-key");
    }
    std::cerr << program << ": WARNING: --insecure-cluster: gRPC inside the cluster is plaintext and "
              << "unauthenticated; anyone who reaches the cluster's ports can register a worker, read prompts and "
              << "write KV. Use --tls-ca/--tls-cert/--tls-key (tandem certs) outside a private test network."
              << std::endl;
    return ClusterTls::Insecure();
  }
  if (given < 3) {
    return absl::InvalidArgumentError(
        "gRPC inside the cluster needs mTLS: --tls-ca, --tls-cert and --tls-key (make them with `tandem certs "
        "--out DIR`), or --insecure-cluster for plaintext on a private test network");
  }
  absl::StatusOr<std::string> ca = ReadFlagFile("tls-ca", ca_file);
  if (!ca.ok()) return ca.status();
  absl::StatusOr<std::string> cert = ReadFlagFile("tls-cert", cert_file);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadFlagFile("tls-key", key_file);
  if (!key.ok()) return key.status();
  absl::StatusOr<std::shared_ptr<const ClusterTls>> tls = ClusterTls::FromPem(*ca, *cert, *key, role);
  if (!tls.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--tls-ca/--tls-cert/--tls-key: ", tls.status().message()));
  }
  return tls;
}

}  // namespace tandem::cli
