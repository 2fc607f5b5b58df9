// Cluster certificates for mTLS between the router and the workers: a
// cluster CA, and certificates that say which role their holder plays.
//
// A role is written into a certificate twice: as its subject's common name
// and as a DNS subject alternative name ("tandem-router",
// "tandem-prefill-worker", "tandem-decode-worker"). The SAN is what makes
// the role checkable by gRPC's own TLS: a client that dials with the target
// name overridden to the role's name (GRPC_SSL_TARGET_NAME_OVERRIDE_ARG)
// accepts only a peer whose certificate names that role, and a server reads
// the peer's SANs from its AuthContext ("x509_subject_alternative_name").
// Certificates may carry more SANs (the host's DNS names and IPs) for other
// TLS clients. Keys are ECDSA P-256; certificates are X.509 v3, signed with
// SHA-256, valid for both server and client authentication.
//
// Used by `tandem up` to make an ephemeral CA for its children (local use
// stays one command) and by `tandem certs` for operators; production
// deployments may bring their own CA (cert-manager) as long as leaf
// certificates carry the role SAN.
// Thread-safety: pure functions (OpenSSL 3 is thread-safe).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tandem::tls {

enum class ClusterRole { kRouter, kPrefillWorker, kDecodeWorker };

// "tandem-router", "tandem-prefill-worker", "tandem-decode-worker".
absl::string_view RoleName(ClusterRole role);

// A private key and its certificate, PEM-encoded.
struct KeyAndCert {
  std::string key_pem;
  std::string cert_pem;
};

// A self-signed CA (CN `name`, basicConstraints CA:TRUE, keyCertSign).
absl::StatusOr<KeyAndCert> MakeClusterCa(absl::string_view name, std::chrono::hours validity);

// A leaf certificate for `role`, signed by `ca`, with the role's DNS SAN plus
// `extra_dns` and `extra_ips` (IPv4 or IPv6 literals). InvalidArgument for a
// malformed CA or IP literal.
absl::StatusOr<KeyAndCert> IssueRoleCert(const KeyAndCert& ca, ClusterRole role,
                                         const std::vector<std::string>& extra_dns,
                                         const std::vector<std::string>& extra_ips, std::chrono::hours validity);

// The roles a certificate (PEM) names in its DNS SANs.
absl::StatusOr<std::vector<ClusterRole>> RolesOf(absl::string_view cert_pem);

// OK when `cert_pem` holds a certificate (a chain: the first is the leaf)
// whose public key is `key_pem`'s; InvalidArgument naming what is wrong.
absl::Status CheckKeyPair(absl::string_view cert_pem, absl::string_view key_pem);

// Whether `cert_pem` chains to `ca_pem` and is valid now (OpenSSL's
// verification, with the role SAN not checked).
absl::Status VerifyAgainstCa(absl::string_view cert_pem, absl::string_view ca_pem);

}  // namespace tandem::tls
