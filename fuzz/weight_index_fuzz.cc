// Fuzz target: model.safetensors.index.json parsing (ParseWeightIndex, what
// WeightStore::Open reads before opening any shard). Input: the index text.
// Asserts: no crash or exception; errors are InvalidArgument with a
// message; every shard name of an accepted index is a plain file name that
// stays inside the model directory: non-empty, no '/', not "." or "..", no
// NUL (which would open a different file than the one named).
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "engine/model/safetensors.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<std::map<std::string, std::string>> map =
      tandem::ParseWeightIndex(tandem::fuzz::AsView(data, size), "model.safetensors.index.json");
  if (!map.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(map.status()) && !map.status().message().empty(), map.status().ToString());
    return 0;
  }
  for (const auto& [tensor, shard] : *map) {
    FUZZ_CHECK(!shard.empty(), "empty shard name");
    FUZZ_CHECK(shard.find('/') == std::string::npos, "shard name with a '/': " + shard);
    FUZZ_CHECK(shard != "." && shard != "..", "shard name '" + shard + "' names a directory");
    FUZZ_CHECK(shard.find('\0') == std::string::npos, "shard name with a NUL");
  }
  return 0;
}
