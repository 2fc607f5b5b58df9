#include "tools/tandem/model_path.h"

#include <cstdlib>
#include <system_error>

namespace tandem::cli {

std::filesystem::path DefaultModelDir() {
  constexpr const char* kBundled = "models/tandem-shakespeare";
  if (const char* env = std::getenv("TANDEM_MODEL"); env && *env) return env;
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto candidate = exe.parent_path().parent_path().parent_path() / kBundled;
    if (std::filesystem::exists(candidate / "config.json")) return candidate;
  }
  return std::filesystem::path(TANDEM_SOURCE_DIR) / kBundled;
}

}  // namespace tandem::cli
