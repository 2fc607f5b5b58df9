// JoinHostPort / SplitHostPort: IPv4, names, bracketed IPv6, and every
// malformed address being refused rather than misread.
#include "common/net/host_port.h"

#include <gtest/gtest.h>

namespace tandem::net {
namespace {

TEST(HostPortTest, JoinBracketsIpv6Only) {
  EXPECT_EQ(JoinHostPort("127.0.0.1", 50051), "127.0.0.1:50051");
  EXPECT_EQ(JoinHostPort("router.ns.svc", 80), "router.ns.svc:80");
  EXPECT_EQ(JoinHostPort("::1", 0), "[::1]:0");
  EXPECT_EQ(JoinHostPort("fd00::5", 50052), "[fd00::5]:50052");
  EXPECT_EQ(JoinHostPort("::", 50051), "[::]:50051");
  EXPECT_EQ(JoinHostPort("[fd00::5]", 7), "[fd00::5]:7");  // already bracketed: not twice
}

TEST(HostPortTest, SplitInvertsJoin) {
  for (const std::string host : {"127.0.0.1", "fd00::5", "::1", "::", "worker-0.tandem-decode", "fe80::1%eth0"}) {
    for (int port : {0, 1, 50053, 65535}) {
      absl::StatusOr<std::pair<std::string, int>> hp = SplitHostPort(JoinHostPort(host, port));
      ASSERT_TRUE(hp.ok()) << host << " " << port << ": " << hp.status();
      EXPECT_EQ(hp->first, host);
      EXPECT_EQ(hp->second, port);
    }
  }
}

TEST(HostPortTest, SplitRefusesMalformedAddresses) {
  for (const char* bad : {"", "127.0.0.1", "127.0.0.1:", ":50051", "fd00::5:50052", "[fd00::5]", "[fd00::5]50052",
                          "[fd00::5:50052", "[]:1", "host:port", "host:-1", "host:+1", "host: 1", "host:65536",
                          "host:99999999999999999999"}) {
    absl::StatusOr<std::pair<std::string, int>> hp = SplitHostPort(bad);
    EXPECT_FALSE(hp.ok()) << "'" << bad << "' -> " << (hp.ok() ? hp->first : "");
    if (!hp.ok()) {
      EXPECT_EQ(hp.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(hp.status().message().find(std::string("'") + bad + "'"), std::string::npos) << hp.status();
    }
  }
}

TEST(HostPortTest, SplitNamesTheUnbracketedIpv6Problem) {
  absl::StatusOr<std::pair<std::string, int>> hp = SplitHostPort("fd00::5:50052");
  ASSERT_FALSE(hp.ok());
  EXPECT_NE(hp.status().message().find("bracketed"), std::string::npos) << hp.status();
}

}  // namespace
}  // namespace tandem::net
