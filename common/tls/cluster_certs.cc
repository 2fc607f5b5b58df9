// Cluster certificates with OpenSSL 3 (EVP keys, X509v3 extensions).
#include "common/tls/cluster_certs.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tandem::tls {
namespace {

template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using PKeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION, X509_EXTENSION_free>>;
using StorePtr = std::unique_ptr<X509_STORE, Deleter<X509_STORE, X509_STORE_free>>;
using StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX, X509_STORE_CTX_free>>;
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;

// The OpenSSL error queue's latest entry, drained.
std::string OpenSslError() {
  char buf[256] = "unknown OpenSSL error";
  if (unsigned long e = ERR_get_error(); e != 0) ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

absl::Status Fail(absl::string_view what) { return absl::InternalError(absl::StrCat(what, ": ", OpenSslError())); }

std::string BioText(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
}

absl::StatusOr<X509Ptr> ParseCert(absl::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!cert) return absl::InvalidArgumentError(absl::StrCat("not a PEM certificate: ", OpenSslError()));
  return cert;
}

absl::StatusOr<PKeyPtr> ParseKey(absl::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PKeyPtr key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) return absl::InvalidArgumentError(absl::StrCat("not a PEM private key: ", OpenSslError()));
  return key;
}

absl::StatusOr<KeyAndCert> ToPem(EVP_PKEY* key, X509* cert) {
  BioPtr key_bio(BIO_new(BIO_s_mem()));
  BioPtr cert_bio(BIO_new(BIO_s_mem()));
  if (!key_bio || !cert_bio ||
      PEM_write_bio_PrivateKey(key_bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1 ||
      PEM_write_bio_X509(cert_bio.get(), cert) != 1) {
    return Fail("PEM encoding");
  }
  return KeyAndCert{BioText(key_bio.get()), BioText(cert_bio.get())};
}

// A fresh certificate with `key`'s public half, subject CN `cn`, a random
// 64-bit serial and the validity window (starting 5 minutes ago, for clock
// skew between hosts).
absl::StatusOr<X509Ptr> NewCert(EVP_PKEY* key, absl::string_view cn, std::chrono::hours validity) {
  X509Ptr cert(X509_new());
  BnPtr serial(BN_new());
  if (!cert || !serial || X509_set_version(cert.get(), 2) != 1 || BN_rand(serial.get(), 63, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr ||
      X509_gmtime_adj(X509_getm_notBefore(cert.get()), -300) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(validity.count()) * 3600) == nullptr ||
      X509_set_pubkey(cert.get(), key) != 1) {
    return Fail("building a certificate");
  }
  const std::string name(cn);
  if (X509_NAME_add_entry_by_txt(X509_get_subject_name(cert.get()), "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0) != 1) {
    return Fail("setting the subject");
  }
  return cert;
}

absl::Status AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) return Fail(absl::StrCat("extension ", OBJ_nid2sn(nid)));
  return absl::OkStatus();
}

absl::StatusOr<PKeyPtr> NewKey() {
  PKeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return Fail("generating a P-256 key");
  return key;
}

bool IsDnsName(absl::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '*') return false;
  }
  return true;
}

bool IsIp(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

}  // namespace

absl::string_view RoleName(ClusterRole role) {
  switch (role) {
    case ClusterRole::kRouter: return "tandem-router";
    case ClusterRole::kPrefillWorker: return "tandem-prefill-worker";
    case ClusterRole::kDecodeWorker: return "tandem-decode-worker";
  }
  return "";
}

absl::StatusOr<KeyAndCert> MakeClusterCa(absl::string_view name, std::chrono::hours validity) {
  absl::StatusOr<PKeyPtr> key = NewKey();
  if (!key.ok()) return key.status();
  absl::StatusOr<X509Ptr> cert = NewCert(key->get(), name, validity);
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  if (X509_set_issuer_name(c, X509_get_subject_name(c)) != 1) return Fail("setting the issuer");
  for (const auto& [nid, value] : {std::pair<int, std::string>{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                                   {NID_key_usage, "critical,keyCertSign,cRLSign"},
                                   {NID_subject_key_identifier, "hash"}}) {
    if (absl::Status st = AddExtension(c, c, nid, value); !st.ok()) return st;
  }
  if (X509_sign(c, key->get(), EVP_sha256()) <= 0) return Fail("signing the CA");
  return ToPem(key->get(), c);
}

absl::StatusOr<KeyAndCert> IssueRoleCert(const KeyAndCert& ca, ClusterRole role,
                                         const std::vector<std::string>& extra_dns,
                                         const std::vector<std::string>& extra_ips, std::chrono::hours validity) {
  absl::StatusOr<X509Ptr> ca_cert = ParseCert(ca.cert_pem);
  if (!ca_cert.ok()) return ca_cert.status();
  absl::StatusOr<PKeyPtr> ca_key = ParseKey(ca.key_pem);
  if (!ca_key.ok()) return ca_key.status();
  if (X509_check_private_key(ca_cert->get(), ca_key->get()) != 1) {
    return absl::InvalidArgumentError("the CA's key does not match its certificate");
  }
  std::vector<std::string> sans = {absl::StrCat("DNS:", RoleName(role))};
  for (const std::string& d : extra_dns) {
    if (!IsDnsName(d)) return absl::InvalidArgumentError(absl::StrCat("not a DNS name: '", d, "'"));
    sans.push_back(absl::StrCat("DNS:", d));
  }
  for (const std::string& ip : extra_ips) {
    if (!IsIp(ip)) return absl::InvalidArgumentError(absl::StrCat("not an IP address: '", ip, "'"));
    sans.push_back(absl::StrCat("IP:", ip));
  }
  absl::StatusOr<PKeyPtr> key = NewKey();
  if (!key.ok()) return key.status();
  absl::StatusOr<X509Ptr> cert = NewCert(key->get(), RoleName(role), validity);
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  if (X509_set_issuer_name(c, X509_get_subject_name(ca_cert->get())) != 1) return Fail("setting the issuer");
  for (const auto& [nid, value] :
       {std::pair<int, std::string>{NID_basic_constraints, "critical,CA:FALSE"},
        {NID_key_usage, "critical,digitalSignature,keyEncipherment"},
        {NID_ext_key_usage, "serverAuth,clientAuth"},
        {NID_subject_alt_name, absl::StrJoin(sans, ",")},
        {NID_subject_key_identifier, "hash"}}) {
    if (absl::Status st = AddExtension(c, ca_cert->get(), nid, value); !st.ok()) return st;
  }
  if (absl::Status st = AddExtension(c, ca_cert->get(), NID_authority_key_identifier, "keyid:always"); !st.ok()) {
    return st;
  }
  if (X509_sign(c, ca_key->get(), EVP_sha256()) <= 0) return Fail("signing the certificate");
  return ToPem(key->get(), c);
}

absl::StatusOr<std::vector<ClusterRole>> RolesOf(absl::string_view cert_pem) {
  absl::StatusOr<X509Ptr> cert = ParseCert(cert_pem);
  if (!cert.ok()) return cert.status();
  std::vector<ClusterRole> roles;
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert->get(), NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return roles;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type != GEN_DNS) continue;
    const absl::string_view dns(reinterpret_cast<const char*>(ASN1_STRING_get0_data(n->d.dNSName)),
                                static_cast<size_t>(ASN1_STRING_length(n->d.dNSName)));
    for (ClusterRole r : {ClusterRole::kRouter, ClusterRole::kPrefillWorker, ClusterRole::kDecodeWorker}) {
      if (dns == RoleName(r)) roles.push_back(r);
    }
  }
  GENERAL_NAMES_free(names);
  return roles;
}

absl::Status CheckKeyPair(absl::string_view cert_pem, absl::string_view key_pem) {
  absl::StatusOr<X509Ptr> cert = ParseCert(cert_pem);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<PKeyPtr> key = ParseKey(key_pem);
  if (!key.ok()) return key.status();
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("the private key does not belong to the certificate");
  }
  return absl::OkStatus();
}

absl::Status VerifyAgainstCa(absl::string_view cert_pem, absl::string_view ca_pem) {
  absl::StatusOr<X509Ptr> cert = ParseCert(cert_pem);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<X509Ptr> ca = ParseCert(ca_pem);
  if (!ca.ok()) return ca.status();
  StorePtr store(X509_STORE_new());
  StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!store || !ctx || X509_STORE_add_cert(store.get(), ca->get()) != 1 ||
      X509_STORE_CTX_init(ctx.get(), store.get(), cert->get(), nullptr) != 1) {
    return Fail("setting up verification");
  }
  if (X509_verify_cert(ctx.get()) != 1) {
    return absl::PermissionDeniedError(absl::StrCat(
        "certificate does not verify against the CA: ",
        X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()))));
  }
  return absl::OkStatus();
}

}  // namespace tandem::tls
