// WeightStore: every tensor of one HuggingFace model directory, from a single
// .safetensors file or from the shards of `model.safetensors.index.json`.
// Status codes are listed in safetensors.h; every message names the file (and
// the tensor where there is one).
// Thread-safety: immutable after Open(); concurrent Get() calls are safe.
#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/model/safetensors.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr char kIndexFile[] = "model.safetensors.index.json";
constexpr char kSingleFile[] = "model.safetensors";

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

bool IsRegularFile(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// Reads the index's weight_map: tensor name -> shard file name.
absl::StatusOr<std::map<std::string, std::string>> ReadWeightMap(const fs::path& index_path) {
  std::ifstream in(index_path, std::ios::binary);
  if (!in) {
    return absl::UnavailableError(absl::StrCat(index_path.string(), ": cannot read"));
  }
  std::stringstream text;
  text << in.rdbuf();
  return ParseWeightIndex(text.str(), index_path);
}

}  // namespace

absl::StatusOr<std::map<std::string, std::string>> ParseWeightIndex(std::string_view text,
                                                                    const fs::path& index_path) {
  json index;
  try {
    index = json::parse(text);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path.string(), ": not valid JSON: ", e.what()));
  }
  auto it = index.is_object() ? index.find("weight_map") : index.end();
  if (it == index.end() || !it->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        index_path.string(), ": field 'weight_map' is missing or not an object"));
  }
  std::map<std::string, std::string> weight_map;
  for (const auto& [tensor, shard] : it->items()) {
    if (!shard.is_string() || shard.get_ref<const std::string&>().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": field 'weight_map': tensor '",
                                                     tensor, "' must map to a shard file name"));
    }
    const std::string& name = shard.get_ref<const std::string&>();
    const fs::path shard_path(name);
    // "." and ".." are their own filename(); a NUL would cut the name the
    // file system sees short of the one compared against the shard's path.
    if (shard_path.is_absolute() || shard_path.filename() != shard_path || name == "." || name == ".." ||
        name.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path.string(), ": field 'weight_map': tensor '", tensor,
                       "' maps to '", shard_path.string(), "', which is not a plain file name"));
    }
    weight_map.emplace(tensor, shard.get<std::string>());
  }
  return weight_map;
}

absl::Status WeightStore::AddFile(std::unique_ptr<SafetensorsFile> file) {
  for (const auto& [name, view] : file->tensors()) {
    auto [it, inserted] = owner_.emplace(name, file.get());
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' appears in both ",
                                                     it->second->path().string(), " and ",
                                                     file->path().string()));
    }
    index_.emplace(name, &view);
  }
  files_.push_back(std::move(file));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<WeightStore>> WeightStore::Open(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(dir.string(), ": model directory not found"));
  }
  std::unique_ptr<WeightStore> store(new WeightStore());
  store->dir_ = dir;

  const fs::path index_path = dir / kIndexFile;
  if (IsRegularFile(index_path)) {
    ASSIGN_OR_RETURN(auto weight_map, ReadWeightMap(index_path));
    std::set<std::string> shards;
    for (const auto& [tensor, shard] : weight_map) shards.insert(shard);
    for (const std::string& shard : shards) {
      const fs::path shard_path = dir / shard;
      auto file = SafetensorsFile::Open(shard_path);
      if (absl::IsNotFound(file.status())) {
        return absl::NotFoundError(absl::StrCat(shard_path.string(), ": shard listed in ",
                                                index_path.string(), " is missing"));
      }
      if (!file.ok()) return file.status();
      RETURN_IF_ERROR(store->AddFile(*std::move(file)));
    }
    for (const auto& [tensor, shard] : weight_map) {
      auto it = store->owner_.find(tensor);
      if (it == store->owner_.end() || it->second->path().filename() != shard) {
        return absl::InvalidArgumentError(absl::StrCat(
            index_path.string(), ": tensor '", tensor, "' is listed in shard ",
            (dir / shard).string(), " but that file does not hold it"));
      }
    }
    return store;
  }

  fs::path single = dir / kSingleFile;
  if (!IsRegularFile(single)) {
    std::vector<std::string> found;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      if (entry.path().extension() == ".safetensors" && IsRegularFile(entry.path())) {
        found.push_back(entry.path().filename().string());
      }
    }
    std::sort(found.begin(), found.end());
    if (found.empty()) {
      return absl::NotFoundError(absl::StrCat(single.string(), " not found (and no ",
                                              kIndexFile, " nor other .safetensors file in ",
                                              dir.string(), ")"));
    }
    if (found.size() > 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          dir.string(), ": no ", kSingleFile, " nor ", kIndexFile, ", and ", found.size(),
          " .safetensors files (", absl::StrJoin(found, ", "), "): cannot tell which to load"));
    }
    single = dir / found.front();
  }
  ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single));
  RETURN_IF_ERROR(store->AddFile(std::move(file)));
  return store;
}

bool WeightStore::Contains(const std::string& name) const { return index_.contains(name); }

absl::StatusOr<TensorView> WeightStore::Get(const std::string& name,
                                            const std::vector<int64_t>& expected_shape) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    return absl::NotFoundError(
        absl::StrCat("tensor '", name, "' not found in the weights of ", dir_.string()));
  }
  const TensorView& view = *it->second;
  if (view.shape != expected_shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        owner_.at(name)->path().string(), ": tensor '", name, "': expected shape ",
        ShapeString(expected_shape), ", got ", ShapeString(view.shape)));
  }
  return view;
}

absl::StatusOr<TensorView> WeightStore::Find(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' not found in the weights of ", dir_.string()));
  }
  return *it->second;
}

std::vector<std::string> WeightStore::Names() const {
  std::vector<std::string> names;
  names.reserve(index_.size());
  for (const auto& [name, view] : index_) names.push_back(name);
  return names;
}

}  // namespace tandem
