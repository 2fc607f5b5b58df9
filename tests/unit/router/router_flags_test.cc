// The router's tuning flags: their defaults are ClusterBackend's own (the
// flag help and ClusterOptions cannot drift apart), values given reach the
// options, and an out-of-range value is refused naming the flag and range.
// The listen flags: the cluster listener is apart from the public one.
#include "router/router_flags.h"

#include "gtest/gtest.h"

namespace tandem::cli {
namespace {

TEST(RouterTuningFlagsTest, DefaultsAreClusterBackendsDefaults) {
  RouterTuningFlags flags;
  ASSERT_TRUE(flags.Validate().ok());
  ClusterOptions applied, defaults;
  flags.Apply(&applied);
  EXPECT_EQ(applied.max_queued, defaults.max_queued);
  EXPECT_EQ(applied.max_queued_tokens, defaults.max_queued_tokens);
  EXPECT_EQ(applied.max_prefill_tokens_per_worker, defaults.max_prefill_tokens_per_worker);
  EXPECT_EQ(applied.prefill_timeout, defaults.prefill_timeout);
  EXPECT_EQ(applied.max_migrations, defaults.max_migrations);
  EXPECT_EQ(applied.migration_patience, defaults.migration_patience);
  EXPECT_EQ(applied.decode_idle_timeout, defaults.decode_idle_timeout);
  EXPECT_EQ(applied.lease_renew_interval, defaults.lease_renew_interval);
  EXPECT_EQ(applied.routing.mode, defaults.routing.mode);
  EXPECT_EQ(applied.routing.mode, RoutingMode::kKvAware);
  EXPECT_EQ(applied.routing.overlap_weight, defaults.routing.overlap_weight);
  EXPECT_EQ(applied.routing.index_blocks_per_worker, defaults.routing.index_blocks_per_worker);
}

TEST(RouterTuningFlagsTest, ParsedValuesReachTheOptions) {
  RouterTuningFlags flags;
  FlagSet set;
  flags.Register(set);
  ASSERT_TRUE(set.Parse({"--max-migrations", "7", "--migration-patience-ms=2500", "--max-queued-tokens", "4096",
                         "--lease-renew-ms", "250", "--routing", "round-robin", "--kv-overlap-weight", "2.5",
                         "--prefix-index-blocks", "4096"})
                  .ok());
  ASSERT_TRUE(flags.Validate().ok());
  ClusterOptions o;
  flags.Apply(&o);
  EXPECT_EQ(o.max_migrations, 7);
  EXPECT_EQ(o.migration_patience, std::chrono::milliseconds(2500));
  EXPECT_EQ(o.max_queued_tokens, 4096);
  EXPECT_EQ(o.lease_renew_interval, std::chrono::milliseconds(250));
  EXPECT_EQ(o.routing.mode, RoutingMode::kRoundRobin);
  EXPECT_EQ(o.routing.overlap_weight, 2.5);
  EXPECT_EQ(o.routing.index_blocks_per_worker, 4096);
}

TEST(RouterTuningFlagsTest, OutOfRangeValuesAreRefusedNamingTheFlag) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {{"--max-migrations", "101"}, "--max-migrations must be in [0, 100] (got 101)"},
           {{"--decode-idle-timeout-ms", "99"}, "--decode-idle-timeout-ms must be in [100, 3600000] (got 99)"},
           {{"--lease-renew-ms", "9"}, "--lease-renew-ms must be in [10, 600000] (got 9)"},
           {{"--max-prefill-tokens-per-worker", "0"}, "--max-prefill-tokens-per-worker must be in [1, 1099511627776] (got 0)"},
           {{"--migration-patience-ms", "-1"}, "--migration-patience-ms must be in [0, 3600000] (got -1)"},
           {{"--max-queued", "-5"}, "--max-queued must be in [0, 1000000] (got -5)"},
           {{"--routing", "random"}, "--routing: 'random' is not one of kv-aware, least-loaded, round-robin"},
           {{"--kv-overlap-weight", "-1"}, "--kv-overlap-weight must be in [0, 1000], got -1"},
           {{"--prefix-index-blocks", "0"}, "--prefix-index-blocks must be in [1, 4294967296] (got 0)"},
       }) {
    RouterTuningFlags flags;
    FlagSet set;
    flags.Register(set);
    ASSERT_TRUE(set.Parse(c.args).ok()) << c.args[0];
    const absl::Status st = flags.Validate();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.args[0];
    EXPECT_EQ(st.message(), c.message);
  }
}

TEST(RouterListenFlagsTest, DefaultsPutTheClusterListenerOnItsOwnPortOfTheSameHost) {
  RouterListenFlags flags;
  ASSERT_TRUE(flags.Validate().ok());
  EXPECT_EQ(flags.port, 50051);
  EXPECT_EQ(flags.cluster_port, 50052);
  FlagSet set;
  flags.Register(set);
  ASSERT_TRUE(set.Parse({"--host", "10.0.0.5"}).ok());
  EXPECT_EQ(flags.ClusterHost(), "10.0.0.5");
  ASSERT_TRUE(set.Parse({"--cluster-host", "192.168.1.2", "--cluster-port", "7002"}).ok());
  ASSERT_TRUE(flags.Validate().ok());
  EXPECT_EQ(flags.ClusterHost(), "192.168.1.2");
  EXPECT_EQ(flags.cluster_port, 7002);
}

TEST(RouterListenFlagsTest, BothPortsZeroPickTwoFreePorts) {
  RouterListenFlags flags;
  FlagSet set;
  flags.Register(set);
  ASSERT_TRUE(set.Parse({"--port", "0", "--cluster-port", "0"}).ok());
  EXPECT_TRUE(flags.Validate().ok());
}

TEST(RouterListenFlagsTest, SharedOrOutOfRangePortsAreRefusedNamingTheFlag) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {{"--port", "7000", "--cluster-port", "7000"},
            "--cluster-port must differ from --port (both 7000): the control plane never shares the public listener"},
           {{"--cluster-port", "50051"},
            "--cluster-port must differ from --port (both 50051): the control plane never shares the public listener"},
           {{"--cluster-port", "65536"}, "--cluster-port must be in [0, 65535] (got 65536)"},
           {{"--cluster-port", "-1"}, "--cluster-port must be in [0, 65535] (got -1)"},
           {{"--port", "70000"}, "--port must be in [0, 65535] (got 70000)"},
       }) {
    RouterListenFlags flags;
    FlagSet set;
    flags.Register(set);
    ASSERT_TRUE(set.Parse(c.args).ok()) << c.args[0];
    const absl::Status st = flags.Validate();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.args[0];
    EXPECT_EQ(st.message(), c.message);
  }
}

}  // namespace
}  // namespace tandem::cli
