// ApiKeyAuth: who may call the public API, and how much each caller may use.
//
// Keys come from a file (`--api-key-file`), one per line:
//   KEY [name=NAME] [max_streams=N] [tokens_per_minute=N]
// Blank lines and lines starting with '#' are skipped. NAME is what logs and
// errors say instead of the key (default "key-<line>"); the limits default to
// the flags' values (0 = unlimited). A client sends `authorization: Bearer
// KEY`; anything else gets UNAUTHENTICATED. Keys are kept only as SHA-256
// digests and a presented key is compared with every digest in constant
// time, so neither timing nor memory shows which keys exist. Reload() re-reads
// the file (the router does it on SIGHUP): a bad file keeps the old keys, and
// a key that stays keeps its in-flight streams and its token bucket, so
// rotation neither frees nor forgets capacity.
//
// Limits per key: at most `max_streams` streams at once, and a token bucket
// of `tokens_per_minute` (refilled continuously, capacity one minute's worth)
// charged prompt + max_tokens when a stream starts and refunded what it did
// not generate when it ends. Over either: RESOURCE_EXHAUSTED with a retry
// hint (how long until the bucket holds enough).
//
// Thread-safety: thread-safe. Authenticate/Admit take short locks; a lease
// may be released on any thread.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace tandem {

struct ApiKeyLimits {
  int64_t max_streams = 0;        // 0 = unlimited
  int64_t tokens_per_minute = 0;  // 0 = unlimited
};

using KeyDigest = std::array<uint8_t, 32>;  // SHA-256

// One line of the key file, parsed.
struct ApiKeyEntry {
  KeyDigest digest{};
  std::string name;
  ApiKeyLimits limits;
};

// Parses a key file's text. InvalidArgument naming the line (never echoing a
// key) for an unknown or malformed option, a duplicate key, or no key at all.
absl::StatusOr<std::vector<ApiKeyEntry>> ParseApiKeys(absl::string_view text, const ApiKeyLimits& defaults);

KeyDigest DigestKey(absl::string_view key);

class ApiKeyAuth {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  // The usage state of one key, shared by its leases and across reloads.
  class Key;

  // Gives back a stream slot, and refunds unspent tokens, when destroyed.
  class Lease {
   public:
    ~Lease();
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    // Tokens the stream actually used (prompt + generated), for the refund.
    void SetUsed(int64_t tokens) { used_ = tokens; }
    std::string key_name() const;

   private:
    friend class ApiKeyAuth;
    Lease(std::shared_ptr<Key> key, int64_t charged) : key_(std::move(key)), charged_(charged), used_(charged) {}
    const std::shared_ptr<Key> key_;
    const int64_t charged_;
    int64_t used_;
  };

  // Reads `path` (see the file comment). `now`: the steady clock by default.
  static absl::StatusOr<std::unique_ptr<ApiKeyAuth>> Load(std::string path, ApiKeyLimits defaults,
                                                          Clock now = nullptr);
  // From text, for tests (Reload() then fails: there is no file).
  static absl::StatusOr<std::unique_ptr<ApiKeyAuth>> FromText(absl::string_view text, ApiKeyLimits defaults,
                                                              Clock now = nullptr);

  // Re-reads the file. On error the old keys stay and the error is returned.
  absl::Status Reload();
  // Reload() when the file changed since the last read (its modification
  // time, size or inode: a Kubernetes Secret update swaps the file), so a
  // rotated Secret takes effect without a signal. Returns whether it
  // reloaded, or the reload's error (reported once per change).
  absl::StatusOr<bool> ReloadIfChanged();
  size_t num_keys() const;

  // The key an `authorization` metadata value names ("Bearer KEY", scheme
  // case-insensitive), or UNAUTHENTICATED.
  absl::StatusOr<std::shared_ptr<Key>> Authenticate(absl::string_view authorization) const;

  // Admits one stream that may use up to `tokens` under `key`'s limits.
  // RESOURCE_EXHAUSTED otherwise, with `*retry_after_ms` set to when trying
  // again can succeed (-1: never, the request alone exceeds the limit).
  absl::StatusOr<std::unique_ptr<Lease>> Admit(const std::shared_ptr<Key>& key, int64_t tokens,
                                               int64_t* retry_after_ms) const;

 private:
  ApiKeyAuth(std::string path, ApiKeyLimits defaults, Clock now);
  absl::Status Install(std::vector<ApiKeyEntry> entries);

  // What the file looked like when last read (ReloadIfChanged).
  struct FileStamp {
    int64_t mtime_ns = -1;
    int64_t size = -1;
    uint64_t inode = 0;
    bool operator==(const FileStamp&) const = default;
  };
  FileStamp Stamp() const;

  const std::string path_;
  const ApiKeyLimits defaults_;
  FileStamp stamp_ ABSL_GUARDED_BY(mu_);
  const Clock now_;
  mutable absl::Mutex mu_;
  std::vector<std::shared_ptr<Key>> keys_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tandem
