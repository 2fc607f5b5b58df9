// `tandem quantize`: offline quantization of a float checkpoint into one
// other tools load too: SmoothQuant W8A8 written as compressed-tensors
// (tools/tandem/smoothquant.h; docs/quantization.md).
// Thread-safety: called once from main().
#pragma once

#include <string>
#include <vector>

namespace tandem::cli {

// Exit code: 0 written, 1 failed (unreadable files, a model error), 2 usage.
int RunQuantize(const std::vector<std::string>& args);

}  // namespace tandem::cli
