// Writes a .safetensors file (the format SafetensorsFile reads): an 8-byte
// little-endian header length, the JSON header (names, dtypes, shapes,
// data_offsets; padded with spaces to a multiple of 8 so every tensor starts
// 8-byte aligned), then the tensors back to back in the order given.
// Used by `tandem quantize` to write checkpoints other tools load.
// Thread-safety: pure function.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/dtype.h"

namespace tandem {

struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::string bytes;  // product(shape) * DTypeSize(dtype) little-endian bytes
};

// InvalidArgument for a size that does not match its shape or a repeated
// name; Internal when the file cannot be written (the path named). The file
// is written to `path` + ".tmp" and renamed, so a reader never sees half.
absl::Status WriteSafetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace tandem
