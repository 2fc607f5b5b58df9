// `tandem up`: the local disaggregated cluster. Starts a router and N
// prefill + M decode worker processes on 127.0.0.1, waits until every worker
// has registered with the router, prints the endpoint, and stops them all on
// Ctrl-C or SIGTERM (or when any of them dies).
// Thread-safety: called once from main().
#pragma once

#include <string>
#include <vector>

namespace tandem::cli {

int RunUp(const std::vector<std::string>& args);

}  // namespace tandem::cli
