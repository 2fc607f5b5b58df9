// `tandem generate`: load a model, generate for one prompt, print the result.
// Thread-safety: called once from main().
#pragma once

#include <string>
#include <vector>

namespace tandem::cli {

// Runs the command with `args` (flags after "generate"). Prints the result on
// stdout and errors on stderr; returns the process exit code.
int RunGenerate(const std::vector<std::string>& args);

}  // namespace tandem::cli
