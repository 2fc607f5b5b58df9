// Where the bundled model lives, so every command has a default --model.
// Thread-safety: pure functions.
#pragma once

#include <filesystem>

namespace tandem::cli {

// $TANDEM_MODEL if set; else models/tandem-shakespeare found from the
// executable's location: beside the build tree (build/bin/../../models, the
// layout of a checkout and of the container image under /opt/tandem). Never
// a path baked in at build time: a binary copied to another machine looks
// only beside itself. When nothing is there, the build-tree candidate is
// returned anyway, so the model loader's error names where it looked.
std::filesystem::path DefaultModelDir();

}  // namespace tandem::cli
