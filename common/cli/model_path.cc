#include "common/cli/model_path.h"

#include <cstdlib>
#include <system_error>

namespace tandem::cli {

std::filesystem::path DefaultModelDir() {
  constexpr const char* kBundled = "models/tandem-shakespeare";
  if (const char* env = std::getenv("TANDEM_MODEL"); env && *env) return env;
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return kBundled;  // relative to the working directory: the best remaining guess
  return exe.parent_path().parent_path().parent_path() / kBundled;
}

}  // namespace tandem::cli
