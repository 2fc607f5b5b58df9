#include "common/grpc/cluster_tls.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/auth_context.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace tandem {

std::shared_ptr<const ClusterTls> ClusterTls::Insecure() {
  static const std::shared_ptr<const ClusterTls> insecure(new ClusterTls(false, "", "", ""));
  return insecure;
}

absl::StatusOr<std::shared_ptr<const ClusterTls>> ClusterTls::FromPem(const std::string& ca_pem,
                                                                     const std::string& cert_pem,
                                                                     const std::string& key_pem,
                                                                     tls::ClusterRole own_role) {
  if (absl::Status st = tls::CheckKeyPair(cert_pem, key_pem); !st.ok()) return st;
  if (absl::Status st = tls::VerifyAgainstCa(cert_pem, ca_pem); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("the certificate is not valid under the cluster CA: ", st.message()));
  }
  absl::StatusOr<std::vector<tls::ClusterRole>> roles = tls::RolesOf(cert_pem);
  if (!roles.ok()) return roles.status();
  bool has_role = false;
  for (tls::ClusterRole r : *roles) has_role |= r == own_role;
  if (!has_role) {
    return absl::InvalidArgumentError(absl::StrCat("the certificate does not name this process's role ('",
                                                   tls::RoleName(own_role), "' as a DNS subject alternative name)"));
  }
  return std::shared_ptr<const ClusterTls>(new ClusterTls(true, ca_pem, cert_pem, key_pem));
}

std::shared_ptr<grpc::ServerCredentials> ClusterTls::ServerCredentials() const {
  if (!secure_) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = ca_pem_;
  options.pem_key_cert_pairs.push_back({key_pem_, cert_pem_});
  return grpc::SslServerCredentials(options);
}

std::shared_ptr<grpc::Channel> ClusterTls::Dial(const std::string& address, tls::ClusterRole peer_role) const {
  if (!secure_) return grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = ca_pem_;
  options.pem_private_key = key_pem_;
  options.pem_cert_chain = cert_pem_;
  grpc::ChannelArguments args;
  // The name the server's certificate must carry: its role, not its address
  // (workers come and go at addresses nobody can put in a certificate).
  args.SetSslTargetNameOverride(std::string(tls::RoleName(peer_role)));
  return grpc::CreateCustomChannel(address, grpc::SslCredentials(options), args);
}

grpc::Status ClusterTls::CheckPeer(const grpc::ServerContextBase& ctx, std::initializer_list<tls::ClusterRole> allowed,
                                   const char* method) const {
  if (!secure_) return grpc::Status::OK;
  const std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "no verified cluster certificate");
  }
  std::vector<std::string> names;
  for (const grpc::string_ref& san : auth->FindPropertyValues("x509_subject_alternative_name")) {
    names.emplace_back(san.data(), san.size());
  }
  std::vector<std::string> wanted;
  for (tls::ClusterRole role : allowed) {
    for (const std::string& n : names) {
      if (n == tls::RoleName(role)) return grpc::Status::OK;
    }
    wanted.emplace_back(tls::RoleName(role));
  }
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                      absl::StrCat(method, " needs a cluster certificate of role ", absl::StrJoin(wanted, " or "),
                                   "; the caller's names none"));
}

}  // namespace tandem
