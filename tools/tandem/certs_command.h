// `tandem certs`: makes a cluster CA and one certificate per role (router,
// prefill worker, decode worker) for mTLS inside the cluster
// (common/tls/cluster_certs.h), as PEM files in one directory.
// Thread-safety: called once from main().
#pragma once

#include <string>
#include <vector>

namespace tandem::cli {

// Returns the process exit code (0 written, 1 failed, 2 usage).
int RunCerts(const std::vector<std::string>& args);

}  // namespace tandem::cli
