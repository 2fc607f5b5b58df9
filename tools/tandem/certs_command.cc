#include "tools/tandem/certs_command.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/cli/cli_flags.h"
#include "common/tls/cluster_certs.h"

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

int RunCerts(const std::vector<std::string>& args) {
  FlagSet flags;
  std::string out;
  std::vector<std::string> dns, ips;
  int64_t days = 365;
  bool force = false, help = false;
  flags.AddString("out", &out, "directory to write into (created 0700 if missing)");
  flags.AddStringList("dns", &dns, "extra DNS name for every certificate (repeatable)");
  flags.AddStringList("ip", &ips, "extra IP address for every certificate (repeatable)");
  flags.AddInt("days", &days, "validity in days (default 365)");
  flags.AddBool("force", &force, "replace files that exist");
  flags.AddBool("help", &help, "show this help");
  const absl::Status parsed = flags.Parse(args);
  if (!parsed.ok() || help || out.empty() || days < 1 || days > 3650) {
    const bool usage_error = !parsed.ok() || (!help && (out.empty() || days < 1 || days > 3650));
    (usage_error ? std::cerr : std::cout)
        << (parsed.ok() ? "" : std::string(parsed.message()) + "\n")
        << "usage: tandem certs --out DIR [--dns NAME]... [--ip ADDR]... [--days N (1..3650)] [--force]\n"
           "writes ca.crt, ca.key and router, prefill-worker, decode-worker .crt/.key: a cluster CA and one "
           "certificate per role (the role is the certificate's CN and a DNS SAN, e.g. tandem-router)\n"
        << flags.Usage();
    return usage_error ? 2 : 0;
  }
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec) {
    std::cerr << "tandem certs: cannot create " << out << ": " << ec.message() << "\n";
    return 1;
  }
  const std::chrono::hours validity(days * 24);
  absl::StatusOr<tls::KeyAndCert> ca = tls::MakeClusterCa("Tandem cluster CA", validity);
  if (!ca.ok()) {
    std::cerr << "tandem certs: " << ca.status() << "\n";
    return 1;
  }
  const std::filesystem::path dir(out);
  struct File {
    std::string name;
    std::string text;
    mode_t mode;
  };
  std::vector<File> files = {{"ca.crt", ca->cert_pem, 0644}, {"ca.key", ca->key_pem, 0600}};
  for (auto [role, stem] : {std::pair{tls::ClusterRole::kRouter, "router"},
                            std::pair{tls::ClusterRole::kPrefillWorker, "prefill-worker"},
                            std::pair{tls::ClusterRole::kDecodeWorker, "decode-worker"}}) {
    absl::StatusOr<tls::KeyAndCert> c = tls::IssueRoleCert(*ca, role, dns, ips, validity);
    if (!c.ok()) {
      std::cerr << "tandem certs: " << c.status().message() << "\n";
      return c.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
    }
    files.push_back({absl::StrCat(stem, ".crt"), c->cert_pem, 0644});
    files.push_back({absl::StrCat(stem, ".key"), c->key_pem, 0600});
  }
  for (const File& f : files) {
    if (absl::Status st = WriteFile(dir / f.name, f.text, f.mode, force); !st.ok()) {
      std::cerr << "tandem certs: " << st.message() << "\n";
      return 1;
    }
  }
  std::cout << "tandem certs: wrote a cluster CA and router, prefill-worker and decode-worker certificates (valid "
            << days << " days) to " << dir.string() << std::endl;
  return 0;
}

}  // namespace tandem::cli
