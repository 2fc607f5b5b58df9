#include "tools/tandem/certs_command.h"

#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/cli/cli_flags.h"
#include "tools/tandem/cluster_cert_dir.h"

namespace tandem::cli {

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
  if (std::filesystem::create_directories(out, ec) && !ec) {
    std::filesystem::permissions(out, std::filesystem::perms::owner_all, ec);  // keys go in it
  }
  if (ec) {
    std::cerr << "tandem certs: cannot create " << out << ": " << ec.message() << "\n";
    return 1;
  }
  ClusterCertOptions options;
  options.extra_dns = dns;
  options.extra_ips = ips;
  options.validity = std::chrono::hours(days * 24);
  options.force = force;
  if (absl::Status st = WriteClusterCerts(out, options); !st.ok()) {
    std::cerr << "tandem certs: " << st.message() << "\n";
    return st.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  std::cout << "tandem certs: wrote a cluster CA and router, prefill-worker and decode-worker certificates (valid "
            << days << " days) to " << out << std::endl;
  return 0;
}

}  // namespace tandem::cli
