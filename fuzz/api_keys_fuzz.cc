// Fuzz target: the router's API keys: the key file (ParseApiKeys /
// ApiKeyAuth::FromText) and the `authorization` metadata every client sends
// (Authenticate), then Admit's token bucket. Input: the key file's text, a
// NUL, the authorization value, a NUL, then admissions (8-byte token counts
// and 2-byte clock steps in ms).
// Asserts: no crash; a refused file is InvalidArgument whose message never
// echoes the key of the line it names; Authenticate accepts exactly
// "Bearer <a key of the file>" (scheme case-insensitive, key
// whitespace-trimmed) and answers UNAUTHENTICATED otherwise; Admit refuses
// only with RESOURCE_EXHAUSTED and a retry hint of -1 (never) or 0..60000
// ms, and every stream slot comes back when its lease ends.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "fuzz/fuzz_util.h"
#include "router/api_keys.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // This absl's string_view is its own type, not std::string_view.
  auto absl_view = [](std::string_view s) { return absl::string_view(s.data(), s.size()); };
  const auto [file_part, rest] = tandem::fuzz::SplitAtNul(tandem::fuzz::AsView(data, size));
  const auto [authorization_part, admissions] = tandem::fuzz::SplitAtNul(rest.value_or(""));
  const absl::string_view file = absl_view(file_part);
  const absl::string_view authorization = absl_view(authorization_part);
  // The keys, by line, as the file format defines them.
  std::vector<std::string> line_keys;
  absl::flat_hash_set<std::string> keys;
  for (absl::string_view line : absl::StrSplit(file, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    std::vector<absl::string_view> fields = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    line_keys.emplace_back(line.empty() || line[0] == '#' || fields.empty() ? "" : fields[0]);
    if (!line_keys.back().empty()) keys.insert(line_keys.back());
  }

  auto now = std::make_shared<std::chrono::steady_clock::time_point>();
  const tandem::ApiKeyLimits defaults{2, 1000};
  absl::StatusOr<std::unique_ptr<tandem::ApiKeyAuth>> auth =
      tandem::ApiKeyAuth::FromText(file, defaults, [now] { return *now; });
  if (!auth.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(auth.status()), auth.status().ToString());
    const std::string message(auth.status().message());
    // The line it names must not have its key quoted (unless that text is
    // elsewhere in the file too, e.g. as a name).
    const size_t at = message.find("line ");
    int line_no = 0;
    if (at != std::string::npos) {
      size_t end = at + 5;
      while (end < message.size() && absl::ascii_isdigit(static_cast<unsigned char>(message[end]))) ++end;
      if (!absl::SimpleAtoi(message.substr(at + 5, end - at - 5), &line_no)) line_no = 0;
    }
    if (line_no >= 1 && line_no <= static_cast<int>(line_keys.size()) && !line_keys[line_no - 1].empty()) {
      // The same file with that key replaced by a marker found nowhere else:
      // the marker in the message would be the key echoed (a key's text can
      // also occur in the message by chance, e.g. "streams=N,").
      const std::string& key = line_keys[line_no - 1];
      const std::string marker(key.size(), '\x01');
      std::vector<std::string> lines = absl::StrSplit(file, '\n');
      const size_t pos = lines[line_no - 1].find(key);
      if (file.find(marker) == absl::string_view::npos && pos != std::string::npos) {
        lines[line_no - 1].replace(pos, key.size(), marker);
        absl::StatusOr<std::vector<tandem::ApiKeyEntry>> again = tandem::ParseApiKeys(absl::StrJoin(lines, "\n"), defaults);
        if (!again.ok()) FUZZ_CHECK(again.status().message().find(marker) == absl::string_view::npos,
                                    "key echoed: " + std::string(again.status().message()));
      }
    }
    return 0;
  }
  FUZZ_CHECK((*auth)->num_keys() == keys.size(), "key count");

  const bool bearer = authorization.size() > 7 && absl::EqualsIgnoreCase(authorization.substr(0, 7), "bearer ");
  const bool expected =
      bearer && keys.contains(std::string(absl::StripAsciiWhitespace(authorization.substr(7))));
  absl::StatusOr<std::shared_ptr<tandem::ApiKeyAuth::Key>> key = (*auth)->Authenticate(authorization);
  FUZZ_CHECK(key.ok() == expected, "Authenticate accepted or refused the wrong value");
  if (!key.ok()) {
    FUZZ_CHECK(absl::IsUnauthenticated(key.status()), key.status().ToString());
    return 0;
  }
  tandem::fuzz::ByteReader in(admissions.value_or(""));
  std::vector<std::unique_ptr<tandem::ApiKeyAuth::Lease>> leases;
  for (int i = 0; i < 32 && !in.empty(); ++i) {
    const int64_t tokens = static_cast<int64_t>(in.U64() % 4096) + 1;
    *now += std::chrono::milliseconds(in.U16());
    int64_t retry_after_ms = -2;
    absl::StatusOr<std::unique_ptr<tandem::ApiKeyAuth::Lease>> lease = (*auth)->Admit(*key, tokens, &retry_after_ms);
    if (lease.ok()) {
      leases.push_back(*std::move(lease));
    } else {
      FUZZ_CHECK(absl::IsResourceExhausted(lease.status()), lease.status().ToString());
      FUZZ_CHECK(retry_after_ms == -1 || (retry_after_ms >= 0 && retry_after_ms <= 60000), "retry hint out of range");
    }
    if (in.U8() % 3 == 0 && !leases.empty()) leases.erase(leases.begin());
  }
  leases.clear();
  // Every slot is back: a stream of one token fits again once the bucket refills.
  *now += std::chrono::minutes(2);
  int64_t retry_after_ms = 0;
  FUZZ_CHECK((*auth)->Admit(*key, 1, &retry_after_ms).ok(), "stream slots or tokens not given back");
  return 0;
}
