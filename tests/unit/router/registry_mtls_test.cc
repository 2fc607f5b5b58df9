// The router's cluster plane over mTLS (common/grpc/cluster_tls.h) on
// 127.0.0.1: the WorkerRegistry takes a registration only from a
// certificate of the cluster CA naming the role it registers; the worker
// pool's channels reach only a server holding the registered role's
// certificate. Plus ClusterTls::FromPem's refusals.
#include <chrono>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/grpc/cluster_tls.h"
#include "common/grpc/server.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "router/registry_service.h"
#include "router/worker_pool.h"
#include "tandem/v1/worker.grpc.pb.h"

namespace tandem {
namespace {

using tls::ClusterRole;
using tls::KeyAndCert;

constexpr std::chrono::hours kDay{24};

KeyAndCert Ca(const std::string& name) {
  absl::StatusOr<KeyAndCert> ca = tls::MakeClusterCa(name, kDay);
  EXPECT_TRUE(ca.ok()) << ca.status();
  return *ca;
}

KeyAndCert Leaf(const KeyAndCert& ca, ClusterRole role) {
  absl::StatusOr<KeyAndCert> leaf = tls::IssueRoleCert(ca, role, {}, {}, kDay);
  EXPECT_TRUE(leaf.ok()) << leaf.status();
  return *leaf;
}

std::shared_ptr<const ClusterTls> Tls(const KeyAndCert& ca, const KeyAndCert& leaf, ClusterRole role) {
  absl::StatusOr<std::shared_ptr<const ClusterTls>> t = ClusterTls::FromPem(ca.cert_pem, leaf.cert_pem, leaf.key_pem, role);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : nullptr;
}

TEST(ClusterTlsTest, FromPemRefusesWhatCannotBeThisProcesssRoleCertificate) {
  const KeyAndCert ca = Ca("cluster CA");
  const KeyAndCert other = Ca("other CA");
  const KeyAndCert router = Leaf(ca, ClusterRole::kRouter);
  const KeyAndCert decode = Leaf(ca, ClusterRole::kDecodeWorker);
  EXPECT_TRUE(ClusterTls::FromPem(ca.cert_pem, router.cert_pem, router.key_pem, ClusterRole::kRouter).ok());
  // Another role's certificate.
  absl::Status st = ClusterTls::FromPem(ca.cert_pem, decode.cert_pem, decode.key_pem, ClusterRole::kRouter).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("tandem-router"), std::string::npos) << st;
  // A key of another certificate.
  EXPECT_EQ(ClusterTls::FromPem(ca.cert_pem, router.cert_pem, decode.key_pem, ClusterRole::kRouter).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A certificate the CA did not sign.
  st = ClusterTls::FromPem(other.cert_pem, router.cert_pem, router.key_pem, ClusterRole::kRouter).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("cluster CA"), std::string::npos) << st;
  EXPECT_EQ(ClusterTls::FromPem("junk", "junk", "junk", ClusterRole::kRouter).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ClusterTls::Insecure()->secure());
}

// A router's cluster listener (RegistryService) with mTLS.
class RegistryMtlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    router_tls_ = Tls(ca_, Leaf(ca_, ClusterRole::kRouter), ClusterRole::kRouter);
    ASSERT_NE(router_tls_, nullptr);
    registry_ = std::make_unique<RegistryService>(&pool_, nullptr, router_tls_);
    absl::StatusOr<std::unique_ptr<grpc::Server>> s =
        StartGrpcServer("127.0.0.1:0", {registry_.get()}, &port_, true, router_tls_->ServerCredentials());
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
  }

  std::string addr() const { return absl::StrCat("127.0.0.1:", port_); }

  // Register `role` worker "w" over `tls` (a client of the registry).
  grpc::Status Register(const ClusterTls& tls, v1::WorkerRole role) {
    auto stub = v1::WorkerRegistry::NewStub(tls.Dial(addr(), ClusterRole::kRouter));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::RegisterRequest r;
    r.set_worker_id("w");
    r.set_role(role);
    r.set_address("127.0.0.1:1");
    v1::RegisterResponse resp;
    return stub->Register(&ctx, r, &resp);
  }

  grpc::Status List(const ClusterTls& tls, int* n) {
    auto stub = v1::WorkerRegistry::NewStub(tls.Dial(addr(), ClusterRole::kRouter));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ListWorkersResponse resp;
    grpc::Status st = stub->ListWorkers(&ctx, v1::ListWorkersRequest(), &resp);
    *n = resp.workers_size();
    return st;
  }

  const KeyAndCert ca_ = Ca("cluster CA");
  std::shared_ptr<const ClusterTls> router_tls_;
  WorkerPool pool_;
  std::unique_ptr<RegistryService> registry_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(RegistryMtlsTest, AWorkerRegistersOnlyWithItsOwnRolesCertificate) {
  auto prefill = Tls(ca_, Leaf(ca_, ClusterRole::kPrefillWorker), ClusterRole::kPrefillWorker);
  auto decode = Tls(ca_, Leaf(ca_, ClusterRole::kDecodeWorker), ClusterRole::kDecodeWorker);
  int n = -1;
  EXPECT_TRUE(List(*decode, &n).ok());
  EXPECT_EQ(n, 0);

  grpc::Status st = Register(*decode, v1::WORKER_ROLE_PREFILL);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_NE(st.error_message().find("tandem-prefill-worker"), std::string::npos) << st.error_message();
  EXPECT_EQ(Register(*router_tls_, v1::WORKER_ROLE_PREFILL).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Register(*prefill, v1::WORKER_ROLE_DECODE).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(List(*router_tls_, &n).ok());
  EXPECT_EQ(n, 0) << "a refused registration must not reach the pool";

  EXPECT_TRUE(Register(*prefill, v1::WORKER_ROLE_PREFILL).ok());
  EXPECT_TRUE(Register(*decode, v1::WORKER_ROLE_DECODE).ok());
  EXPECT_TRUE(List(*prefill, &n).ok());
  EXPECT_EQ(n, 2);
}

TEST_F(RegistryMtlsTest, NoCallGetsThroughWithoutACertificateFromTheClusterCa) {
  int n = -1;
  // Plaintext: no handshake.
  EXPECT_EQ(Register(*ClusterTls::Insecure(), v1::WORKER_ROLE_PREFILL).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(List(*ClusterTls::Insecure(), &n).error_code(), grpc::StatusCode::UNAVAILABLE);
  // A prefill-worker certificate of another CA (that client trusts its own CA, so
  // it also refuses the router's certificate; both ends say no).
  const KeyAndCert other = Ca("other CA");
  auto stranger = Tls(other, Leaf(other, ClusterRole::kPrefillWorker), ClusterRole::kPrefillWorker);
  EXPECT_EQ(Register(*stranger, v1::WORKER_ROLE_PREFILL).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(List(*router_tls_, &n).ok());
  EXPECT_EQ(n, 0);
}

// A prefill worker's server as the worker pool sees it: Stats only, with
// the same role check the real service makes.
class FakePrefill final : public v1::PrefillWorker::CallbackService {
 public:
  explicit FakePrefill(std::shared_ptr<const ClusterTls> tls) : tls_(std::move(tls)) {}
  grpc::ServerUnaryReactor* Stats(grpc::CallbackServerContext* ctx, const v1::StatsRequest*,
                                  v1::WorkerStats* resp) override {
    grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
    resp->set_worker_id("fake");
    r->Finish(tls_->CheckPeer(*ctx, {ClusterRole::kRouter}, "Stats"));
    return r;
  }

 private:
  const std::shared_ptr<const ClusterTls> tls_;
};

TEST_F(RegistryMtlsTest, ThePoolReachesOnlyAServerHoldingTheRegisteredRolesCertificate) {
  // Two "prefill workers": one with a prefill-worker certificate, one with a
  // decode-worker certificate (it could have registered as decode only).
  auto real = Tls(ca_, Leaf(ca_, ClusterRole::kPrefillWorker), ClusterRole::kPrefillWorker);
  auto wrong = Tls(ca_, Leaf(ca_, ClusterRole::kDecodeWorker), ClusterRole::kDecodeWorker);
  FakePrefill real_service(real), wrong_service(wrong);
  int real_port = 0, wrong_port = 0;
  auto real_server = StartGrpcServer("127.0.0.1:0", {&real_service}, &real_port, true, real->ServerCredentials());
  auto wrong_server = StartGrpcServer("127.0.0.1:0", {&wrong_service}, &wrong_port, true, wrong->ServerCredentials());
  ASSERT_TRUE(real_server.ok() && wrong_server.ok());
  WorkerPool pool(router_tls_);
  pool.Add(v1::WORKER_ROLE_PREFILL, "real", absl::StrCat("127.0.0.1:", real_port));
  pool.Add(v1::WORKER_ROLE_PREFILL, "wrong", absl::StrCat("127.0.0.1:", wrong_port));
  for (const std::string id : {"real", "wrong"}) {
    absl::StatusOr<WorkerHandle> h = pool.Acquire(v1::WORKER_ROLE_PREFILL, {id == "real" ? "wrong" : "real"});
    ASSERT_TRUE(h.ok()) << h.status();
    ASSERT_EQ(h->id, id);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::WorkerStats stats;
    const grpc::Status st = h->prefill->Stats(&ctx, v1::StatsRequest(), &stats);
    if (id == "real") {
      EXPECT_TRUE(st.ok()) << st.error_message();
      EXPECT_EQ(stats.worker_id(), "fake");
    } else {
      // Its certificate does not say tandem-prefill-worker: no handshake.
      EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
    }
    pool.Done(v1::WORKER_ROLE_PREFILL, *h);
  }
  // The real server refuses a caller that is not a router.
  auto stub = v1::PrefillWorker::NewStub(wrong->Dial(absl::StrCat("127.0.0.1:", real_port), ClusterRole::kPrefillWorker));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::WorkerStats stats;
  EXPECT_EQ(stub->Stats(&ctx, v1::StatsRequest(), &stats).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  (*real_server)->Shutdown(std::chrono::system_clock::now());
  (*wrong_server)->Shutdown(std::chrono::system_clock::now());
}

}  // namespace
}  // namespace tandem
