// Cluster certificates: what they say (roles, chain) checked with OpenSSL,
// refusals of malformed names, and mTLS with them over real gRPC on
// 127.0.0.1: a client that presents a certificate of the cluster CA and
// dials the server's role reaches it and is seen under its own role; a
// client with no certificate, one from another CA, or dialing the wrong
// role does not get through.
#include "common/tls/cluster_certs.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "tandem/v1/generation.grpc.pb.h"

namespace tandem::tls {
namespace {

constexpr std::chrono::hours kDay(24);

KeyAndCert Ca(const std::string& name) {
  absl::StatusOr<KeyAndCert> ca = MakeClusterCa(name, kDay);
  EXPECT_TRUE(ca.ok()) << ca.status();
  return ca.ok() ? *ca : KeyAndCert{};
}

KeyAndCert Leaf(const KeyAndCert& ca, ClusterRole role) {
  absl::StatusOr<KeyAndCert> c = IssueRoleCert(ca, role, {"localhost"}, {"127.0.0.1", "::1"}, kDay);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : KeyAndCert{};
}

TEST(ClusterCertsTest, LeavesChainToTheirCaAndNameTheirRole) {
  const KeyAndCert ca = Ca("tandem test CA");
  const KeyAndCert other_ca = Ca("another CA");
  for (ClusterRole role : {ClusterRole::kRouter, ClusterRole::kPrefillWorker, ClusterRole::kDecodeWorker}) {
    const KeyAndCert leaf = Leaf(ca, role);
    EXPECT_TRUE(VerifyAgainstCa(leaf.cert_pem, ca.cert_pem).ok()) << RoleName(role);
    EXPECT_EQ(VerifyAgainstCa(leaf.cert_pem, other_ca.cert_pem).code(), absl::StatusCode::kPermissionDenied);
    absl::StatusOr<std::vector<ClusterRole>> roles = RolesOf(leaf.cert_pem);
    ASSERT_TRUE(roles.ok());
    EXPECT_EQ(*roles, std::vector<ClusterRole>{role});
  }
  absl::StatusOr<std::vector<ClusterRole>> ca_roles = RolesOf(ca.cert_pem);
  ASSERT_TRUE(ca_roles.ok());
  EXPECT_TRUE(ca_roles->empty());
  // A leaf cannot sign: a certificate "issued" by one does not verify.
  const KeyAndCert leaf = Leaf(ca, ClusterRole::kRouter);
  absl::StatusOr<KeyAndCert> grandchild = IssueRoleCert(leaf, ClusterRole::kRouter, {}, {}, kDay);
  ASSERT_TRUE(grandchild.ok());
  EXPECT_FALSE(VerifyAgainstCa(grandchild->cert_pem, ca.cert_pem).ok());
}

TEST(ClusterCertsTest, RefusesMalformedNamesAndKeys) {
  const KeyAndCert ca = Ca("tandem test CA");
  // A comma would smuggle another SAN (e.g. a role) into the extension.
  for (const std::string dns : {"a,DNS:tandem-router", "", "bad name", "x/y"}) {
    EXPECT_EQ(IssueRoleCert(ca, ClusterRole::kPrefillWorker, {dns}, {}, kDay).status().code(),
              absl::StatusCode::kInvalidArgument)
        << dns;
  }
  for (const std::string ip : {"10.0.0.256", "localhost", "1.2.3.4,DNS:tandem-router", ""}) {
    EXPECT_EQ(IssueRoleCert(ca, ClusterRole::kPrefillWorker, {}, {ip}, kDay).status().code(),
              absl::StatusCode::kInvalidArgument)
        << ip;
  }
  KeyAndCert mismatched = ca;
  mismatched.key_pem = Ca("other").key_pem;
  EXPECT_EQ(IssueRoleCert(mismatched, ClusterRole::kRouter, {}, {}, kDay).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(IssueRoleCert({"junk", "junk"}, ClusterRole::kRouter, {}, {}, kDay).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RolesOf("not a certificate").status().code(), absl::StatusCode::kInvalidArgument);
}

// Answers every Generate with the caller's role SANs in the error message,
// so the client can see what the server saw.
class WhoAmI final : public v1::Generation::CallbackService {
 public:
  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(grpc::CallbackServerContext* ctx,
                                                           const v1::GenerateRequest*) override {
    std::string seen;
    for (const grpc::string_ref& v : ctx->auth_context()->FindPropertyValues("x509_subject_alternative_name")) {
      absl::StrAppend(&seen, seen.empty() ? "" : ",", std::string(v.data(), v.size()));
    }
    class Done final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
     public:
      explicit Done(std::string m) { Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, m)); }
      void OnDone() override { delete this; }
    };
    return new Done(seen);
  }
};

struct MtlsServer {
  WhoAmI service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;

  MtlsServer(const KeyAndCert& ca, const KeyAndCert& leaf) {
    grpc::SslServerCredentialsOptions o(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    o.pem_root_certs = ca.cert_pem;
    o.pem_key_cert_pairs.push_back({leaf.key_pem, leaf.cert_pem});
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(o), &port);
    b.RegisterService(&service);
    server = b.BuildAndStart();
  }
  ~MtlsServer() { server->Shutdown(std::chrono::system_clock::now()); }
};

// The status of one call to the server, as `client` (null: no client
// certificate) trusting `trust`, dialing it as role `dial`.
grpc::Status Call(int port, const KeyAndCert& trust, const KeyAndCert* client, ClusterRole dial) {
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = trust.cert_pem;
  if (client != nullptr) {
    o.pem_private_key = client->key_pem;
    o.pem_cert_chain = client->cert_pem;
  }
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride(std::string(RoleName(dial)));
  auto stub = v1::Generation::NewStub(
      grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port), grpc::SslCredentials(o), args));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto reader = stub->Generate(&ctx, v1::GenerateRequest());
  v1::GenerateResponse r;
  while (reader->Read(&r)) {
  }
  return reader->Finish();
}

TEST(ClusterMtlsTest, OnlyCertificatesOfTheClusterCaDialingTheRightRoleGetThrough) {
  const KeyAndCert ca = Ca("tandem test CA");
  const KeyAndCert decode = Leaf(ca, ClusterRole::kDecodeWorker);
  const KeyAndCert router = Leaf(ca, ClusterRole::kRouter);
  MtlsServer server(ca, decode);
  ASSERT_NE(server.server, nullptr);

  const grpc::Status ok = Call(server.port, ca, &router, ClusterRole::kDecodeWorker);
  EXPECT_EQ(ok.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << ok.error_message();
  EXPECT_NE(ok.error_message().find("tandem-router"), std::string::npos) << ok.error_message();
  EXPECT_EQ(ok.error_message().find("tandem-decode-worker"), std::string::npos) << ok.error_message();

  // Dialing as if the server were a prefill worker: its certificate says otherwise.
  EXPECT_EQ(Call(server.port, ca, &router, ClusterRole::kPrefillWorker).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // No client certificate, or one from another CA: the server refuses the handshake.
  EXPECT_EQ(Call(server.port, ca, nullptr, ClusterRole::kDecodeWorker).error_code(), grpc::StatusCode::UNAVAILABLE);
  const KeyAndCert other_ca = Ca("impostor CA");
  const KeyAndCert impostor = Leaf(other_ca, ClusterRole::kRouter);
  EXPECT_EQ(Call(server.port, ca, &impostor, ClusterRole::kDecodeWorker).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // A client that trusts another CA does not accept the server.
  EXPECT_EQ(Call(server.port, other_ca, &impostor, ClusterRole::kDecodeWorker).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace tandem::tls
