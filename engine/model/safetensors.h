// Read-only access to HuggingFace safetensors weights, memory-mapped.
//
// A WeightStore opens a model directory holding either `model.safetensors` or
// shards listed by `model.safetensors.index.json`, validates every header
// (length, JSON, dtypes, shapes, offsets inside the file and not overlapping)
// and hands out TensorViews that point into the mapping. Weights stay in their
// file dtype; kernels convert while they read.
//
// Every failure is an absl::Status whose message names the file and, where
// there is one, the tensor. Nothing here aborts on malformed input.
//
// Thread-safety: a WeightStore is immutable after Open(); concurrent Get() calls
// are safe. TensorViews borrow the mapping and must not outlive the store.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/dtype.h"

namespace tandem {

struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // row-major, outermost first
  const void* data = nullptr;  // into the mapping
  size_t size_bytes = 0;

  int64_t num_elements() const;
};

// One memory-mapped .safetensors file.
class SafetensorsFile {
 public:
  // Maps and validates `path`. Errors: NotFound (missing file); DataLoss when
  // the file is shorter than its own header says (file under 8 bytes, header
  // length past the end, data_offsets past the end of the buffer);
  // InvalidArgument for a malformed or self-inconsistent header (not JSON, not
  // an object, unsupported dtype, bad shape or data_offsets, end < begin,
  // overlapping tensors, byte size != product(shape) * dtype size).
  // Data pointers are as aligned as the file makes them (the writer pads the
  // header to 8 bytes; nothing here checks it).
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::map<std::string, TensorView> tensors_;
};

// What SafetensorsFile::Open validates, on `size` bytes at `data` (a whole
// file's image): the tensors, whose views point into `data`. `path` only
// names the source in messages. Same errors as Open (bar NotFound).
absl::StatusOr<std::map<std::string, TensorView>> ParseSafetensors(const void* data, uint64_t size,
                                                                   const std::filesystem::path& path);

// The weight_map of a `model.safetensors.index.json` whose text is `text`:
// tensor name -> shard file name (a plain file name in the model
// directory). `index_path` only names the source in messages.
// InvalidArgument for bad JSON, a missing or non-object weight_map, or a
// shard that is not a non-empty plain file name.
absl::StatusOr<std::map<std::string, std::string>> ParseWeightIndex(std::string_view text,
                                                                    const std::filesystem::path& index_path);

// All weights of one model directory (single file or sharded).
class WeightStore {
 public:
  // Opens the shards named in `dir/model.safetensors.index.json` when that
  // exists, else `dir/model.safetensors`, else the directory's only
  // `*.safetensors` file. Errors name the file: NotFound (no weights, or a
  // shard the index names is missing), InvalidArgument (bad index, a tensor
  // missing from the shard the index names, a tensor in two shards, several
  // unindexed .safetensors files), plus SafetensorsFile::Open's errors.
  static absl::StatusOr<std::unique_ptr<WeightStore>> Open(const std::filesystem::path& dir);

  bool Contains(const std::string& name) const;

  // The tensor `name`, checked against `expected_shape` exactly (a scalar is
  // {}). NotFound names the tensor and the directory; InvalidArgument names
  // the tensor, its file, and both shapes.
  absl::StatusOr<TensorView> Get(const std::string& name,
                                 const std::vector<int64_t>& expected_shape) const;

  // The tensor `name` whatever its shape (for tools that copy tensors).
  // NotFound names the tensor and the directory.
  absl::StatusOr<TensorView> Find(const std::string& name) const;

  // Every tensor name, sorted.
  std::vector<std::string> Names() const;

 private:
  WeightStore() = default;
  absl::Status AddFile(std::unique_ptr<SafetensorsFile> file);

  std::filesystem::path dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
  std::map<std::string, const SafetensorsFile*> owner_;
};

}  // namespace tandem
