// ApiKeyAuth on a fake clock: the key file's format and errors (never
// echoing a key), Bearer parsing, exact per-key stream and token-bucket
// limits with their retry hints, and reloads that keep a staying key's
// usage.
#include "router/api_keys.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct FakeClock {
  std::chrono::steady_clock::time_point t{std::chrono::seconds(1000)};
  ApiKeyAuth::Clock fn() {
    return [this] { return t; };
  }
};

std::unique_ptr<ApiKeyAuth> FromText(const std::string& text, FakeClock* clock, ApiKeyLimits defaults = {}) {
  absl::StatusOr<std::unique_ptr<ApiKeyAuth>> a = ApiKeyAuth::FromText(text, defaults, clock->fn());
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? *std::move(a) : nullptr;
}

TEST(ApiKeysParseTest, ReadsKeysOptionsAndSkipsCommentsAndBlankLines) {
  absl::StatusOr<std::vector<ApiKeyEntry>> e = ParseApiKeys(
      "# team keys\n\n  sk-alpha  name=alice max_streams=3\r\nsk-beta tokens_per_minute=600\n", {2, 0});
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_EQ(e->size(), 2u);
  EXPECT_EQ((*e)[0].name, "alice");
  EXPECT_EQ((*e)[0].limits.max_streams, 3);
  EXPECT_EQ((*e)[0].limits.tokens_per_minute, 0);
  EXPECT_EQ((*e)[0].digest, DigestKey("sk-alpha"));
  EXPECT_EQ((*e)[1].name, "key-4");  // its line
  EXPECT_EQ((*e)[1].limits.max_streams, 2);  // the default
  EXPECT_EQ((*e)[1].limits.tokens_per_minute, 600);
}

TEST(ApiKeysParseTest, ErrorsNameTheLineNeverTheKey) {
  for (const std::string text : {"sk-secret1 colour=red\n", "sk-secret1 max_streams=-1\n", "sk-secret1 name=\n",
                                 "sk-secret1 tokens_per_minute=lots\n", "sk-secret1\nsk-secret1\n", "# none\n\n",
                                 "sk-other sk-secret1\n", "sk-other sk-secret1=x\n"}) {
    absl::StatusOr<std::vector<ApiKeyEntry>> e = ParseApiKeys(text, {});
    ASSERT_FALSE(e.ok()) << text;
    EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(e.status().message()), Not(HasSubstr("secret1"))) << text;
  }
  EXPECT_THAT(std::string(ParseApiKeys("a\nb colour=red\n", {}).status().message()), HasSubstr("line 2"));
  EXPECT_THAT(std::string(ParseApiKeys("a\n\na\n", {}).status().message()), HasSubstr("line 3"));
}

TEST(ApiKeyAuthTest, OnlyABearerHeaderWithAListedKeyAuthenticates) {
  FakeClock clock;
  std::unique_ptr<ApiKeyAuth> auth = FromText("sk-one name=one\nsk-two name=two\n", &clock);
  ASSERT_NE(auth, nullptr);
  for (const std::string bad : {"", "sk-one", "Bearer ", "Bearer sk-three", "Basic sk-one", "Bearer sk-on",
                                "Bearer sk-one2", "Bearersk-one"}) {
    absl::StatusOr<std::shared_ptr<ApiKeyAuth::Key>> k = auth->Authenticate(bad);
    EXPECT_EQ(k.status().code(), absl::StatusCode::kUnauthenticated) << bad;
  }
  for (const std::string good : {"Bearer sk-two", "bearer sk-two", "BEARER  sk-two "}) {
    absl::StatusOr<std::shared_ptr<ApiKeyAuth::Key>> k = auth->Authenticate(good);
    ASSERT_TRUE(k.ok()) << good;
    int64_t retry = 0;
    absl::StatusOr<std::unique_ptr<ApiKeyAuth::Lease>> lease = auth->Admit(*k, 10, &retry);
    ASSERT_TRUE(lease.ok());
    EXPECT_EQ((*lease)->key_name(), "two");
  }
}

TEST(ApiKeyAuthTest, MaxStreamsCountsOpenLeasesExactly) {
  FakeClock clock;
  std::unique_ptr<ApiKeyAuth> auth = FromText("k max_streams=2\nother\n", &clock);
  std::shared_ptr<ApiKeyAuth::Key> key = *auth->Authenticate("Bearer k");
  int64_t retry = 0;
  auto a = auth->Admit(key, 1, &retry);
  auto b = auth->Admit(key, 1, &retry);
  ASSERT_TRUE(a.ok() && b.ok());
  auto c = auth->Admit(key, 1, &retry);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(retry, 1000);
  // Another key is not affected.
  EXPECT_TRUE(auth->Admit(*auth->Authenticate("Bearer other"), 1, &retry).ok());
  a->reset();
  EXPECT_TRUE(auth->Admit(key, 1, &retry).ok());
}

TEST(ApiKeyAuthTest, TokensPerMinuteIsABucketWithExactRetryHintsAndRefunds) {
  FakeClock clock;
  std::unique_ptr<ApiKeyAuth> auth = FromText("k tokens_per_minute=600\n", &clock);  // 10 tokens a second
  std::shared_ptr<ApiKeyAuth::Key> key = *auth->Authenticate("Bearer k");
  int64_t retry = 0;
  auto first = auth->Admit(key, 400, &retry);
  ASSERT_TRUE(first.ok());
  auto second = auth->Admit(key, 300, &retry);  // 200 left: 100 short = 10 s
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(retry, 10000);
  clock.t += std::chrono::seconds(9);
  EXPECT_FALSE(auth->Admit(key, 300, &retry).ok());
  EXPECT_EQ(retry, 1000);
  clock.t += std::chrono::seconds(1);
  auto third = auth->Admit(key, 300, &retry);
  ASSERT_TRUE(third.ok());  // bucket now 0
  // A stream that used 100 of its 400 gives 300 back when it ends.
  (*first)->SetUsed(100);
  first->reset();
  EXPECT_TRUE(auth->Admit(key, 300, &retry).ok());
  EXPECT_FALSE(auth->Admit(key, 1, &retry).ok());
  // More than a minute's worth can never pass: no retry hint.
  EXPECT_EQ(auth->Admit(key, 601, &retry).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(retry, -1);
  // The bucket never holds more than a minute's worth.
  clock.t += std::chrono::hours(1);
  EXPECT_TRUE(auth->Admit(key, 600, &retry).ok());
  EXPECT_FALSE(auth->Admit(key, 1, &retry).ok());
}

TEST(ApiKeyAuthTest, ReloadSwapsKeysKeepsAStayingKeysUsageAndSurvivesABadFile) {
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("tandem_api_keys_test_" + std::to_string(::getpid()));
  auto write = [&](const std::string& text) { std::ofstream(path, std::ios::trunc) << text; };
  write("stay max_streams=1\nleave\n");
  FakeClock clock;
  absl::StatusOr<std::unique_ptr<ApiKeyAuth>> loaded = ApiKeyAuth::Load(path.string(), {}, clock.fn());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ApiKeyAuth& auth = **loaded;
  int64_t retry = 0;
  auto held = auth.Admit(*auth.Authenticate("Bearer stay"), 1, &retry);
  ASSERT_TRUE(held.ok());

  write("stay max_streams=1 name=renamed\nnew\n");
  ASSERT_TRUE(auth.Reload().ok());
  EXPECT_EQ(auth.num_keys(), 2u);
  EXPECT_EQ(auth.Authenticate("Bearer leave").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(auth.Authenticate("Bearer new").ok());
  std::shared_ptr<ApiKeyAuth::Key> stay = *auth.Authenticate("Bearer stay");
  EXPECT_EQ(auth.Admit(stay, 1, &retry).status().code(), absl::StatusCode::kResourceExhausted);  // still held
  EXPECT_EQ((*held)->key_name(), "renamed");

  // Changes are picked up without a signal; a bad file is reported once.
  absl::StatusOr<bool> changed = auth.ReloadIfChanged();
  ASSERT_TRUE(changed.ok());
  EXPECT_FALSE(*changed);
  write("stay max_streams=1 name=renamed\nnew\nnewer\n");
  changed = auth.ReloadIfChanged();
  ASSERT_TRUE(changed.ok());
  EXPECT_TRUE(*changed);
  EXPECT_TRUE(auth.Authenticate("Bearer newer").ok());
  write("stay max_streams=oops\n");
  EXPECT_EQ(auth.ReloadIfChanged().status().code(), absl::StatusCode::kInvalidArgument);
  changed = auth.ReloadIfChanged();
  ASSERT_TRUE(changed.ok());
  EXPECT_FALSE(*changed);
  EXPECT_TRUE(auth.Authenticate("Bearer newer").ok());

  write("stay colour=red\n");
  EXPECT_EQ(auth.Reload().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(auth.Authenticate("Bearer new").ok());  // the old keys stay
  std::filesystem::remove(path);
  EXPECT_EQ(auth.Reload().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(auth.Authenticate("Bearer new").ok());
}

}  // namespace
}  // namespace tandem
