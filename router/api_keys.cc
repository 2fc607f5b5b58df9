// ApiKeyAuth: key file parsing, constant-time lookup, per-key limits.
#include "router/api_keys.h"

#include <openssl/crypto.h>
#include <sys/stat.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace tandem {

class ApiKeyAuth::Key {
 public:
  Key(const ApiKeyEntry& e, ApiKeyAuth::Clock clock)
      : digest(e.digest), clock_(std::move(clock)), name_(e.name), limits_(e.limits),
        level_(static_cast<double>(e.limits.tokens_per_minute)), refilled_(Now()) {}

  const KeyDigest digest;

  void Update(const ApiKeyEntry& e) {
    absl::MutexLock lock(&mu_);
    name_ = e.name;
    limits_ = e.limits;
    level_ = std::min(level_, static_cast<double>(limits_.tokens_per_minute));
  }
  std::string name() const {
    absl::MutexLock lock(&mu_);
    return name_;
  }

  absl::Status Admit(int64_t tokens, std::chrono::steady_clock::time_point now, int64_t* retry_after_ms) {
    absl::MutexLock lock(&mu_);
    if (limits_.max_streams > 0 && in_flight_ >= limits_.max_streams) {
      *retry_after_ms = 1000;  // when a stream ends is unknown; a second is the usual hint
      return absl::ResourceExhaustedError(absl::StrCat("API key '", name_, "' has ", in_flight_,
                                                       " streams open, its limit (max_streams)"));
    }
    if (limits_.tokens_per_minute > 0) {
      Refill(now);
      const double cap = static_cast<double>(limits_.tokens_per_minute);
      if (static_cast<double>(tokens) > cap) {
        *retry_after_ms = -1;
        return absl::ResourceExhaustedError(
            absl::StrCat("the request may use ", tokens, " tokens (prompt + max_tokens), more than API key '",
                         name_, "' may use in a minute (", limits_.tokens_per_minute, ")"));
      }
      if (level_ < static_cast<double>(tokens)) {
        const double per_ms = cap / 60000.0;
        *retry_after_ms = static_cast<int64_t>(std::ceil((static_cast<double>(tokens) - level_) / per_ms));
        return absl::ResourceExhaustedError(absl::StrCat("API key '", name_, "' is over its ",
                                                         limits_.tokens_per_minute, " tokens per minute"));
      }
      level_ -= static_cast<double>(tokens);
    }
    ++in_flight_;
    return absl::OkStatus();
  }

  void End(int64_t unused_tokens, std::chrono::steady_clock::time_point now) {
    absl::MutexLock lock(&mu_);
    --in_flight_;
    if (limits_.tokens_per_minute > 0 && unused_tokens > 0) {
      Refill(now);
      level_ = std::min(static_cast<double>(limits_.tokens_per_minute), level_ + static_cast<double>(unused_tokens));
    }
  }

  std::chrono::steady_clock::time_point Now() const { return clock_ ? clock_() : std::chrono::steady_clock::now(); }

 private:
  void Refill(std::chrono::steady_clock::time_point now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (now <= refilled_) return;
    const double ms = std::chrono::duration<double, std::milli>(now - refilled_).count();
    const double cap = static_cast<double>(limits_.tokens_per_minute);
    level_ = std::min(cap, level_ + ms * cap / 60000.0);
    refilled_ = now;
  }

  const ApiKeyAuth::Clock clock_;
  mutable absl::Mutex mu_;
  std::string name_ ABSL_GUARDED_BY(mu_);
  ApiKeyLimits limits_ ABSL_GUARDED_BY(mu_);
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  double level_ ABSL_GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point refilled_ ABSL_GUARDED_BY(mu_);
};

KeyDigest DigestKey(absl::string_view key) {
  KeyDigest d{};
  unsigned int len = 0;
  EVP_Digest(key.data(), key.size(), d.data(), &len, EVP_sha256(), nullptr);
  return d;
}

absl::StatusOr<std::vector<ApiKeyEntry>> ParseApiKeys(absl::string_view text, const ApiKeyLimits& defaults) {
  std::vector<ApiKeyEntry> out;
  absl::flat_hash_set<std::string> seen;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> fields = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    ApiKeyEntry e;
    e.digest = DigestKey(fields[0]);
    e.name = absl::StrCat("key-", line_no);
    e.limits = defaults;
    for (size_t i = 1; i < fields.size(); ++i) {
      const size_t eq = fields[i].find('=');
      const absl::string_view opt = fields[i].substr(0, eq);
      const absl::string_view value = eq == absl::string_view::npos ? "" : fields[i].substr(eq + 1);
      auto number = [&](int64_t* v) {
        return eq != absl::string_view::npos && absl::SimpleAtoi(value, v) && *v >= 0;
      };
      bool ok = false;
      if (opt == "name") {
        ok = !value.empty();
        e.name = std::string(value);
      } else if (opt == "max_streams") {
        ok = number(&e.limits.max_streams);
      } else if (opt == "tokens_per_minute") {
        ok = number(&e.limits.tokens_per_minute);
      }
      if (!ok) {
        // Only a known option's name is quoted: anything else may be a
        // second key pasted onto the line, which must not reach a log.
        const bool known = opt == "name" || opt == "max_streams" || opt == "tokens_per_minute";
        return absl::InvalidArgumentError(absl::StrCat(
            "API key file line ", line_no, ": ",
            known ? absl::StrCat("option '", opt, "' has a bad value")
                  : absl::StrCat("field ", i + 1, " is not a known option (two keys on one line?)"),
            " (options: name=NAME, max_streams=N, tokens_per_minute=N, N >= 0)"));
      }
    }
    if (!seen.insert(std::string(reinterpret_cast<const char*>(e.digest.data()), e.digest.size())).second) {
      return absl::InvalidArgumentError(absl::StrCat("API key file line ", line_no, ": the key repeats an earlier line"));
    }
    out.push_back(std::move(e));
  }
  if (out.empty()) return absl::InvalidArgumentError("the API key file holds no key");
  return out;
}

ApiKeyAuth::Lease::~Lease() { key_->End(charged_ - used_, key_->Now()); }

std::string ApiKeyAuth::Lease::key_name() const { return key_->name(); }

ApiKeyAuth::ApiKeyAuth(std::string path, ApiKeyLimits defaults, Clock now)
    : path_(std::move(path)), defaults_(defaults), now_(std::move(now)) {}

absl::StatusOr<std::unique_ptr<ApiKeyAuth>> ApiKeyAuth::Load(std::string path, ApiKeyLimits defaults, Clock now) {
  auto auth = std::unique_ptr<ApiKeyAuth>(new ApiKeyAuth(std::move(path), defaults, std::move(now)));
  if (absl::Status st = auth->Reload(); !st.ok()) return st;
  return auth;
}

absl::StatusOr<std::unique_ptr<ApiKeyAuth>> ApiKeyAuth::FromText(absl::string_view text, ApiKeyLimits defaults,
                                                                 Clock now) {
  auto auth = std::unique_ptr<ApiKeyAuth>(new ApiKeyAuth("", defaults, std::move(now)));
  absl::StatusOr<std::vector<ApiKeyEntry>> entries = ParseApiKeys(text, defaults);
  if (!entries.ok()) return entries.status();
  if (absl::Status st = auth->Install(*std::move(entries)); !st.ok()) return st;
  return auth;
}

ApiKeyAuth::FileStamp ApiKeyAuth::Stamp() const {
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) return {};
  return {int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec, static_cast<int64_t>(st.st_size),
          static_cast<uint64_t>(st.st_ino)};
}

absl::StatusOr<bool> ApiKeyAuth::ReloadIfChanged() {
  if (path_.empty()) return false;
  const FileStamp now = Stamp();
  {
    absl::MutexLock lock(&mu_);
    if (now == stamp_) return false;
    stamp_ = now;  // a bad file is reported once, not on every look
  }
  if (absl::Status st = Reload(); !st.ok()) return st;
  return true;
}

absl::Status ApiKeyAuth::Reload() {
  if (path_.empty()) return absl::FailedPreconditionError("these API keys came from no file");
  const FileStamp stamp = Stamp();
  std::ifstream in(path_, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the API key file ", path_));
  std::ostringstream text;
  text << in.rdbuf();
  absl::StatusOr<std::vector<ApiKeyEntry>> entries = ParseApiKeys(text.str(), defaults_);
  if (!entries.ok()) return absl::InvalidArgumentError(absl::StrCat(path_, ": ", entries.status().message()));
  {
    absl::MutexLock lock(&mu_);
    stamp_ = stamp;
  }
  return Install(*std::move(entries));
}

absl::Status ApiKeyAuth::Install(std::vector<ApiKeyEntry> entries) {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<Key>> next;
  for (const ApiKeyEntry& e : entries) {
    auto same = std::find_if(keys_.begin(), keys_.end(), [&](const auto& k) { return k->digest == e.digest; });
    if (same != keys_.end()) {
      (*same)->Update(e);  // a key that stays keeps its streams and its bucket
      next.push_back(*same);
    } else {
      next.push_back(std::make_shared<Key>(e, now_));
    }
  }
  keys_ = std::move(next);
  return absl::OkStatus();
}

size_t ApiKeyAuth::num_keys() const {
  absl::MutexLock lock(&mu_);
  return keys_.size();
}

absl::StatusOr<std::shared_ptr<ApiKeyAuth::Key>> ApiKeyAuth::Authenticate(absl::string_view authorization) const {
  constexpr absl::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(authorization.substr(0, kScheme.size()), kScheme)) {
    return absl::UnauthenticatedError("an API key is required: send metadata 'authorization: Bearer <key>'");
  }
  const KeyDigest presented = DigestKey(absl::StripAsciiWhitespace(authorization.substr(kScheme.size())));
  std::shared_ptr<Key> found;
  absl::MutexLock lock(&mu_);
  // Every digest is compared, each in constant time: how long this takes
  // says nothing about which key (if any) matched.
  for (const std::shared_ptr<Key>& k : keys_) {
    const bool match = CRYPTO_memcmp(k->digest.data(), presented.data(), presented.size()) == 0;
    if (match) found = k;
  }
  if (found == nullptr) return absl::UnauthenticatedError("invalid API key");
  return found;
}

absl::StatusOr<std::unique_ptr<ApiKeyAuth::Lease>> ApiKeyAuth::Admit(const std::shared_ptr<Key>& key,
                                                                     int64_t tokens, int64_t* retry_after_ms) const {
  if (absl::Status st = key->Admit(tokens, key->Now(), retry_after_ms); !st.ok()) return st;
  return std::unique_ptr<Lease>(new Lease(key, tokens));
}

}  // namespace tandem
