// `tandem perplexity`: the perplexity of a model over a text file
// (engine/model/perplexity.h), the yardstick for precisions and
// quantization schemes (docs/quantization.md).
// Thread-safety: called once from main().
#pragma once

#include <string>
#include <vector>

namespace tandem::cli {

// Exit code: 0 computed, 1 failed (unreadable files, a model error), 2 usage.
int RunPerplexity(const std::vector<std::string>& args);

}  // namespace tandem::cli
