#include "tools/tandem/cluster_cert_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace tandem::cli {
namespace {

// Writes `text` to `path` created with `mode` (never following or replacing
// an existing file unless `force`).
absl::Status WriteFile(const std::filesystem::path& path, const std::string& text, mode_t mode, bool force) {
  if (force) ::unlink(path.c_str());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot create ", path.string(), ": ", std::strerror(errno), errno == EEXIST ? " (--force replaces it)" : ""));
  }
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return absl::InternalError(absl::StrCat("writing ", path.string(), ": ", std::strerror(errno)));
    }
    done += static_cast<size_t>(n);
  }
  return ::close(fd) == 0 ? absl::OkStatus() : absl::InternalError(absl::StrCat("closing ", path.string()));
}

}  // namespace

const char* CertStem(tls::ClusterRole role) {
  switch (role) {
    case tls::ClusterRole::kRouter: return "router";
    case tls::ClusterRole::kPrefillWorker: return "prefill-worker";
    case tls::ClusterRole::kDecodeWorker: return "decode-worker";
  }
  return "";
}

std::filesystem::path CertFile(const std::filesystem::path& dir, tls::ClusterRole role) {
  return dir / absl::StrCat(CertStem(role), ".crt");
}
std::filesystem::path KeyFile(const std::filesystem::path& dir, tls::ClusterRole role) {
  return dir / absl::StrCat(CertStem(role), ".key");
}
std::filesystem::path CaFile(const std::filesystem::path& dir) { return dir / "ca.crt"; }

absl::Status WriteClusterCerts(const std::filesystem::path& dir, const ClusterCertOptions& options) {
  absl::StatusOr<tls::KeyAndCert> ca = tls::MakeClusterCa("Tandem cluster CA", options.validity);
  if (!ca.ok()) return ca.status();
  struct File {
    std::filesystem::path path;
    std::string text;
    mode_t mode;
  };
  std::vector<File> files = {{CaFile(dir), ca->cert_pem, 0644}};
  if (options.write_ca_key) files.push_back({dir / "ca.key", ca->key_pem, 0600});
  for (tls::ClusterRole role :
       {tls::ClusterRole::kRouter, tls::ClusterRole::kPrefillWorker, tls::ClusterRole::kDecodeWorker}) {
    absl::StatusOr<tls::KeyAndCert> c =
        tls::IssueRoleCert(*ca, role, options.extra_dns, options.extra_ips, options.validity);
    if (!c.ok()) return c.status();
    files.push_back({CertFile(dir, role), c->cert_pem, 0644});
    files.push_back({KeyFile(dir, role), c->key_pem, 0600});
  }
  for (const File& f : files) {
    if (absl::Status st = WriteFile(f.path, f.text, f.mode, options.force); !st.ok()) return st;
  }
  return absl::OkStatus();
}

}  // namespace tandem::cli
