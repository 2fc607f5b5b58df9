// Where the bundled model lives, so every command has a default --model.
// Thread-safety: pure functions.
#pragma once

#include <filesystem>

namespace tandem::cli {

// $TANDEM_MODEL if set; else models/tandem-shakespeare beside the build tree
// (found from the executable's location: build/bin/../../models); else under
// the source directory the binary was built from.
std::filesystem::path DefaultModelDir();

}  // namespace tandem::cli
