// SafetensorsFile: maps one .safetensors file read-only and validates its
// header before handing out any pointer into it.
//
// Layout: 8-byte little-endian header length N, N bytes of JSON
// {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
// then the byte buffer; offsets are relative to the start of the buffer.
//
// Status codes (see safetensors.h): NotFound for a missing file, DataLoss when
// the file is shorter than its own header says (truncated), InvalidArgument for
// a malformed or self-inconsistent header. Messages start with the file path
// and name the tensor where there is one.
// Thread-safety: a SafetensorsFile is immutable after Open().
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/json_nesting.h"
#include "common/status_macros.h"
#include "engine/model/safetensors.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

using json = nlohmann::json;

constexpr uint64_t kHeaderLengthBytes = 8;

std::string Where(const std::filesystem::path& path) { return path.string(); }

std::string WhereTensor(const std::filesystem::path& path, const std::string& name) {
  return absl::StrCat(path.string(), ": tensor '", name, "'");
}

// Shortened JSON for error messages.
std::string Snippet(const json& j) {
  std::string s = j.dump();
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

absl::StatusOr<DType> ParseDType(const std::filesystem::path& path, const std::string& name,
                                 const json& entry) {
  auto it = entry.find("dtype");
  if (it == entry.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(WhereTensor(path, name), ": missing field 'dtype'"));
  }
  if (!it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(
        WhereTensor(path, name), ": field 'dtype' must be a string, got ", Snippet(*it)));
  }
  const std::string& s = it->get_ref<const std::string&>();
  if (s == "F32") return DType::kF32;
  if (s == "F16") return DType::kF16;
  if (s == "BF16") return DType::kBF16;
  if (s == "F8_E4M3") return DType::kF8E4M3;
  if (s == "I8") return DType::kI8;
  if (s == "U8") return DType::kU8;
  if (s == "I32") return DType::kI32;
  if (s == "I64") return DType::kI64;
  return absl::InvalidArgumentError(
      absl::StrCat(WhereTensor(path, name), ": unsupported dtype '", s,
                   "' (supported: F32, F16, BF16, F8_E4M3, I8, U8, I32, I64)"));
}

absl::StatusOr<std::vector<int64_t>> ParseShape(const std::filesystem::path& path,
                                                const std::string& name, const json& entry) {
  auto it = entry.find("shape");
  if (it == entry.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(WhereTensor(path, name), ": missing field 'shape'"));
  }
  if (!it->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(
        WhereTensor(path, name), ": field 'shape' must be a list of non-negative integers, got ",
        Snippet(*it)));
  }
  std::vector<int64_t> shape;
  for (const json& d : *it) {
    // Non-negative JSON integers parse as unsigned; negatives and floats do not.
    if (!d.is_number_unsigned() || d.get<uint64_t>() > (uint64_t{1} << 62)) {
      return absl::InvalidArgumentError(
          absl::StrCat(WhereTensor(path, name),
                       ": field 'shape' must be a list of non-negative integers, got ",
                       Snippet(*it)));
    }
    shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
  }
  return shape;
}

absl::StatusOr<std::pair<uint64_t, uint64_t>> ParseOffsets(const std::filesystem::path& path,
                                                           const std::string& name,
                                                           const json& entry) {
  auto it = entry.find("data_offsets");
  if (it == entry.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(WhereTensor(path, name), ": missing field 'data_offsets'"));
  }
  if (!it->is_array() || it->size() != 2 || !(*it)[0].is_number_unsigned() ||
      !(*it)[1].is_number_unsigned()) {
    return absl::InvalidArgumentError(absl::StrCat(
        WhereTensor(path, name),
        ": field 'data_offsets' must be [begin, end] with non-negative integers, got ",
        Snippet(*it)));
  }
  const uint64_t begin = (*it)[0].get<uint64_t>();
  const uint64_t end = (*it)[1].get<uint64_t>();
  if (end < begin) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: field 'data_offsets' [%d, %d] ends before it begins", WhereTensor(path, name), begin,
        end));
  }
  return std::make_pair(begin, end);
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

int64_t TensorView::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) munmap(map_, map_size_);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string msg = absl::StrCat(Where(path), ": cannot open: ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(msg);
    if (err == EACCES) return absl::PermissionDeniedError(msg);
    return absl::UnavailableError(msg);
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(Where(path), ": not a regular file"));
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < kHeaderLengthBytes) {
    ::close(fd);
    return absl::DataLossError(absl::StrFormat(
        "%s: truncated: file is %d bytes, shorter than the 8-byte header length", Where(path),
        file_size));
  }
  void* map = mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (map == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat(Where(path), ": mmap failed: ", std::strerror(map_err)));
  }
  // From here on the destructor unmaps on every return path.
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_ = map;
  file->map_size_ = file_size;
  ASSIGN_OR_RETURN(file->tensors_, ParseSafetensors(map, file_size, path));
  return file;
}

absl::StatusOr<std::map<std::string, TensorView>> ParseSafetensors(const void* data, uint64_t file_size,
                                                                   const std::filesystem::path& path) {
  if (file_size < kHeaderLengthBytes) {
    return absl::DataLossError(absl::StrFormat(
        "%s: truncated: file is %d bytes, shorter than the 8-byte header length", Where(path),
        file_size));
  }
  const auto* bytes = static_cast<const unsigned char*>(data);
  std::map<std::string, TensorView> tensors;
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > file_size - kHeaderLengthBytes) {
    return absl::DataLossError(absl::StrFormat(
        "%s: truncated: header length %d runs past the end of the file (%d bytes)", Where(path),
        header_len, file_size));
  }
  const char* header_begin = reinterpret_cast<const char*>(bytes + kHeaderLengthBytes);
  // Error messages dump() values, which recurses once per nesting level.
  if (absl::Status s = CheckJsonNesting(std::string_view(header_begin, header_len)); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(Where(path), ": header: ", s.message()));
  }
  json header;
  try {
    header = json::parse(header_begin, header_begin + header_len);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(path), ": header is not valid JSON: ", e.what()));
  }
  if (!header.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        Where(path), ": header must be a JSON object, got ", Snippet(header)));
  }

  const uint64_t buffer_offset = kHeaderLengthBytes + header_len;
  const uint64_t buffer_size = file_size - buffer_offset;
  struct Range {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Range> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object() && !entry.is_null()) {
        return absl::InvalidArgumentError(absl::StrCat(
            Where(path), ": field '__metadata__' must be an object, got ", Snippet(entry)));
      }
      continue;
    }
    if (!entry.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(
          WhereTensor(path, name), ": entry must be an object, got ", Snippet(entry)));
    }
    ASSIGN_OR_RETURN(DType dtype, ParseDType(path, name, entry));
    ASSIGN_OR_RETURN(std::vector<int64_t> shape, ParseShape(path, name, entry));
    ASSIGN_OR_RETURN(auto offsets, ParseOffsets(path, name, entry));
    const auto [begin, end] = offsets;
    if (end > buffer_size) {
      return absl::DataLossError(absl::StrFormat(
          "%s: data_offsets [%d, %d] run past the end of the data buffer (%d bytes); "
          "the file is truncated",
          WhereTensor(path, name), begin, end, buffer_size));
    }
    uint64_t expected = DTypeSize(dtype);
    for (int64_t d : shape) {
      if (__builtin_mul_overflow(expected, static_cast<uint64_t>(d), &expected)) {
        return absl::InvalidArgumentError(absl::StrCat(
            WhereTensor(path, name), ": shape ", ShapeString(shape), " overflows 64 bits"));
      }
    }
    if (end - begin != expected) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: data_offsets [%d, %d] hold %d bytes but shape %s of %s needs %d",
          WhereTensor(path, name), begin, end, end - begin, ShapeString(shape),
          DTypeName(dtype), expected));
    }
    TensorView view;
    view.name = name;
    view.dtype = dtype;
    view.shape = std::move(shape);
    view.data = bytes + buffer_offset + begin;
    view.size_bytes = static_cast<size_t>(end - begin);
    auto [pos, inserted] = tensors.emplace(name, std::move(view));
    if (end > begin) ranges.push_back({begin, end, &pos->first});
  }

  // No two tensors may share a byte (empty tensors share nothing).
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].begin < ranges[i - 1].end) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: tensors '%s' [%d, %d] and '%s' [%d, %d] overlap", Where(path), *ranges[i - 1].name,
          ranges[i - 1].begin, ranges[i - 1].end, *ranges[i].name, ranges[i].begin,
          ranges[i].end));
    }
  }
  return tensors;
}

}  // namespace tandem
