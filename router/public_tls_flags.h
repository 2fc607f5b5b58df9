// TLS on the public API's port (--public-tls-cert/--public-tls-key), shared
// by tandem-router, `tandem serve` and `tandem up` (which passes them to its
// router). Server-side TLS only: clients authenticate with API keys
// (api_key_flags.h), which TLS then keeps secret on the wire.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/cli/cli_flags.h"
#include "grpcpp/security/server_credentials.h"

namespace tandem::cli {

struct PublicTlsFlags {
  std::string cert_file;  // PEM: the server's certificate (chain)
  std::string key_file;   // PEM: its private key

  void Register(FlagSet& f);
  // The public listener's credentials: TLS with the files' certificate and
  // key, or null (plaintext) when neither flag is given. InvalidArgument
  // naming the flag for one without the other, an unreadable file, or a
  // key that does not belong to the certificate.
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Load() const;
};

}  // namespace tandem::cli
