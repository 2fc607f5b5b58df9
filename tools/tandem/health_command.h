// `tandem health`: asks one gRPC server's grpc.health.v1 Health/Check and
// exits 0 when it says SERVING: a probe for Kubernetes exec probes and
// scripts, for ports Kubernetes' own gRPC probes cannot reach (mTLS inside
// the cluster, TLS on the public port).
// Thread-safety: called once from main().
#pragma once

#include <string>
#include <vector>

namespace tandem::cli {

// Exit code: 0 SERVING, 1 anything else (NOT_SERVING, an error), 2 usage.
int RunHealth(const std::vector<std::string>& args);

}  // namespace tandem::cli
