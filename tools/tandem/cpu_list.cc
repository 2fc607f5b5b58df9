#include "tools/tandem/cpu_list.h"

#include <sched.h>

#include <algorithm>
#include <charconv>
#include <string>

#include "absl/strings/str_cat.h"

namespace tandem::cli {
namespace {

constexpr int kMaxCpu = 1024;  // CPU_SETSIZE

bool ParseCpu(std::string_view s, int* out) {
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size() && *out >= 0 && *out < kMaxCpu;
}

}  // namespace

absl::StatusOr<std::vector<int>> ParseCpuList(std::string_view text) {
  std::vector<int> cpus;
  if (text.empty()) return cpus;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string_view item = text.substr(start, comma - start);
    start = comma + 1;
    const size_t dash = item.find('-');
    int lo = 0, hi = 0;
    const bool ok = dash == std::string_view::npos
                        ? ParseCpu(item, &lo) && (hi = lo, true)
                        : ParseCpu(item.substr(0, dash), &lo) && ParseCpu(item.substr(dash + 1), &hi) && lo <= hi;
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat("CPU list '", std::string(text), "': bad item '", std::string(item),
                                                     "' (want N or A-B with A <= B < ", kMaxCpu, ")"));
    }
    for (int c = lo; c <= hi; ++c) cpus.push_back(c);
  }
  std::sort(cpus.begin(), cpus.end());
  cpus.erase(std::unique(cpus.begin(), cpus.end()), cpus.end());
  return cpus;
}

absl::Status CheckCpusAllowed(const std::vector<int>& cpus) {
  cpu_set_t mine;
  CPU_ZERO(&mine);
  if (sched_getaffinity(0, sizeof mine, &mine) != 0) return absl::InternalError("sched_getaffinity failed");
  for (int c : cpus) {
    if (!CPU_ISSET(c, &mine)) {
      return absl::InvalidArgumentError(absl::StrCat("CPU ", c, " is not available to this process (allowed: ",
                                                     CPU_COUNT(&mine), " CPUs)"));
    }
  }
  return absl::OkStatus();
}

bool WorkersShareCpus(const std::vector<int>& prefill_cpus, const std::vector<int>& decode_cpus,
                      int64_t prefill_workers, int64_t decode_workers) {
  if (prefill_workers != 1 || decode_workers != 1) return true;  // a role's workers share its list
  if (prefill_cpus.empty() || decode_cpus.empty()) return true;
  for (int c : prefill_cpus) {
    if (std::find(decode_cpus.begin(), decode_cpus.end(), c) != decode_cpus.end()) return true;
  }
  return false;
}

}  // namespace tandem::cli
