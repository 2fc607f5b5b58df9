// ClusterTls: how one process speaks gRPC inside the cluster (router <->
// workers): mutual TLS with its role certificate from the cluster CA, or
// plaintext when the operator asked for it (--insecure-cluster).
//
// With mTLS:
//  - servers require a client certificate that chains to the cluster CA
//    (a peer without one never completes the handshake), and each handler
//    then checks the role the certificate names (CheckPeer): the registry
//    takes a prefill registration only from a prefill-worker certificate, a
//    worker takes Prefill/Admit/Decode only from a router certificate;
//  - clients dial with the target name set to the role they expect to
//    reach (Dial), so the router sends a user's prompt (and a decode
//    worker's KV descriptor) only to a peer holding that role's
//    certificate, whatever address it registered; workers register only
//    with a peer holding the router's.
// Roles are DNS subject alternative names (common/tls/cluster_certs.h).
//
// Thread-safety: immutable after Load; every method is thread-safe.
#pragma once

#include <initializer_list>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/tls/cluster_certs.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/status.h"

namespace tandem {

class ClusterTls {
 public:
  // Plaintext inside the cluster: every peer passes CheckPeer.
  static std::shared_ptr<const ClusterTls> Insecure();

  // mTLS as `own_role`, from PEM text: the cluster CA's certificate, this
  // process's certificate (chain) and key. InvalidArgument when the key
  // does not match the certificate, the certificate does not chain to the
  // CA or has expired, or it does not name `own_role`.
  static absl::StatusOr<std::shared_ptr<const ClusterTls>> FromPem(const std::string& ca_pem,
                                                                  const std::string& cert_pem,
                                                                  const std::string& key_pem,
                                                                  tls::ClusterRole own_role);

  bool secure() const { return secure_; }

  // For a cluster listener: TLS that requires and verifies a client
  // certificate from the CA; plaintext when insecure.
  std::shared_ptr<grpc::ServerCredentials> ServerCredentials() const;

  // A channel to `address` that accepts only a server whose certificate
  // names `peer_role` (plaintext when insecure).
  std::shared_ptr<grpc::Channel> Dial(const std::string& address, tls::ClusterRole peer_role) const;

  // OK when insecure, or when the calling peer's certificate names one of
  // `allowed`. UNAUTHENTICATED without a verified certificate;
  // PERMISSION_DENIED naming `method` and the roles for a certificate of
  // another role.
  grpc::Status CheckPeer(const grpc::ServerContextBase& ctx, std::initializer_list<tls::ClusterRole> allowed,
                         const char* method) const;

 private:
  ClusterTls(bool secure, std::string ca_pem, std::string cert_pem, std::string key_pem)
      : secure_(secure), ca_pem_(std::move(ca_pem)), cert_pem_(std::move(cert_pem)), key_pem_(std::move(key_pem)) {}

  const bool secure_;
  const std::string ca_pem_;
  const std::string cert_pem_;
  const std::string key_pem_;
};

}  // namespace tandem
