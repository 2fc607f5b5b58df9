// `tandem serve`: the colocated server (router, prefill and decode in one
// process) exposing the public tandem.v1.Generation API over gRPC.
// Thread-safety: called once from main().
#pragma once

#include <string>
#include <vector>

namespace tandem::cli {

// Serves until SIGINT or SIGTERM; returns the process exit code.
int RunServe(const std::vector<std::string>& args);

}  // namespace tandem::cli
