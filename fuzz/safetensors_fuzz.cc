// Fuzz target: the safetensors header validation behind
// SafetensorsFile::Open (ParseSafetensors on an in-memory file image).
// Input: the whole file (8-byte header length, JSON header, data buffer).
// Asserts: no crash or exception on any bytes; an error carries a message
// and is DataLoss or InvalidArgument; every tensor of an accepted file lies
// inside the data buffer, holds exactly product(shape) * dtype size bytes,
// shares no byte with another tensor, and can be read in full (ASan checks
// the reads).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/dtype.h"
#include "engine/model/safetensors.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A copy of exactly `size` bytes, so a read past the image is an ASan report.
  std::vector<uint8_t> image(data, data + size);
  absl::StatusOr<std::map<std::string, tandem::TensorView>> tensors =
      tandem::ParseSafetensors(image.data(), image.size(), "fuzz.safetensors");
  if (!tensors.ok()) {
    FUZZ_CHECK(absl::IsDataLoss(tensors.status()) || absl::IsInvalidArgument(tensors.status()),
               tensors.status().ToString());
    return 0;
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | image[i];
  const uint8_t* buffer = image.data() + 8 + header_len;
  const uint8_t* end = image.data() + image.size();
  std::vector<std::pair<const uint8_t*, const uint8_t*>> ranges;
  for (const auto& [name, view] : *tensors) {
    FUZZ_CHECK(view.name == name, "view named differently from its key");
    uint64_t expected = tandem::DTypeSize(view.dtype);
    for (int64_t d : view.shape) {
      FUZZ_CHECK(d >= 0, "negative dimension");
      expected *= static_cast<uint64_t>(d);
    }
    FUZZ_CHECK(view.size_bytes == expected, "size differs from shape * dtype");
    FUZZ_CHECK(view.num_elements() * static_cast<int64_t>(tandem::DTypeSize(view.dtype)) ==
                   static_cast<int64_t>(view.size_bytes), "num_elements disagrees");
    const auto* begin = static_cast<const uint8_t*>(view.data);
    FUZZ_CHECK(begin >= buffer && begin <= end && view.size_bytes <= static_cast<uint64_t>(end - begin),
               "tensor outside the data buffer");
    uint8_t sum = 0;
    for (size_t i = 0; i < view.size_bytes; ++i) sum ^= begin[i];
    (void)sum;
    if (view.size_bytes > 0) ranges.emplace_back(begin, begin + view.size_bytes);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) FUZZ_CHECK(ranges[i].first >= ranges[i - 1].second, "tensors overlap");
  return 0;
}
