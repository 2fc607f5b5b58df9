// `tandem client`: streams one generation from any Tandem endpoint
// (tandem serve, tandem up, a router) and prints the text as it arrives.
// Thread-safety: called once from main().
#pragma once

#include <string>
#include <vector>

namespace tandem::cli {

int RunClient(const std::vector<std::string>& args);

}  // namespace tandem::cli
