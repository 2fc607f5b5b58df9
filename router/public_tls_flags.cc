#include "router/public_tls_flags.h"

#include "absl/strings/str_cat.h"
#include "common/cli/flag_files.h"
#include "common/tls/cluster_certs.h"

namespace tandem::cli {
void PublicTlsFlags::Register(FlagSet& f) {
  f.AddString("public-tls-cert", &cert_file,
              "serve the public API over TLS with this PEM certificate (chain); needs --public-tls-key (default: "
              "plaintext)");
  f.AddString("public-tls-key", &key_file, "the PEM private key of --public-tls-cert");
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> PublicTlsFlags::Load() const {
  if (cert_file.empty() && key_file.empty()) return std::shared_ptr<grpc::ServerCredentials>();
  if (cert_file.empty() || key_file.empty()) {
    return absl::InvalidArgumentError("--public-tls-cert and --public-tls-key go together");
  }
  absl::StatusOr<std::string> cert = ReadFlagFile("public-tls-cert", cert_file);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadFlagFile("public-tls-key", key_file);
  if (!key.ok()) return key.status();
  if (absl::Status st = tls::CheckKeyPair(*cert, *key); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--public-tls-cert/--public-tls-key: ", st.message()));
  }
  grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  options.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(options);
}

}  // namespace tandem::cli
