// ParseCpuList / CheckCpusAllowed: the CPU lists of `tandem up
// --prefill-cores/--decode-cores`.
#include "tools/tandem/cpu_list.h"

#include <sched.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tandem::cli {
namespace {

TEST(CpuListTest, ParsesSinglesRangesAndListsSortedAndDistinct) {
  EXPECT_EQ(*ParseCpuList(""), std::vector<int>{});
  EXPECT_EQ(*ParseCpuList("3"), std::vector<int>{3});
  EXPECT_EQ(*ParseCpuList("0-3"), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(*ParseCpuList("8,0-2,1,1023"), (std::vector<int>{0, 1, 2, 8, 1023}));
  EXPECT_EQ(*ParseCpuList("5-5"), std::vector<int>{5});
}

TEST(CpuListTest, RejectsMalformedItemsNamingThem) {
  for (const std::string bad : {",", "1,", ",1", "a", "1-", "-1", "3-1", "1024", "0-1024", "1 ", "1--2", "+1"}) {
    const auto r = ParseCpuList(bad);
    ASSERT_FALSE(r.ok()) << "'" << bad << "'";
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(std::string(r.status().message()).find("bad item"), std::string::npos) << r.status();
  }
}

TEST(CpuListTest, AllowsOnlyCpusInThisProcessAffinity) {
  cpu_set_t mine;
  ASSERT_EQ(sched_getaffinity(0, sizeof mine, &mine), 0);
  std::vector<int> allowed;
  int outside = -1;
  for (int c = 0; c < 1024; ++c) {
    if (CPU_ISSET(c, &mine)) {
      allowed.push_back(c);
    } else if (outside < 0) {
      outside = c;
    }
  }
  EXPECT_TRUE(CheckCpusAllowed(allowed).ok());
  ASSERT_GE(outside, 0);
  const absl::Status st = CheckCpusAllowed({allowed[0], outside});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("CPU " + std::to_string(outside)), std::string::npos) << st;
}

TEST(CpuListTest, WorkersShareCpusUnlessOnePerRoleOnDisjointLists) {
  EXPECT_FALSE(WorkersShareCpus({0}, {1}, 1, 1));
  EXPECT_FALSE(WorkersShareCpus({0, 2}, {1, 3}, 1, 1));
  EXPECT_TRUE(WorkersShareCpus({0, 1}, {1}, 1, 1));  // overlap
  EXPECT_TRUE(WorkersShareCpus({}, {1}, 1, 1));      // unpinned prefill: every CPU
  EXPECT_TRUE(WorkersShareCpus({0}, {}, 1, 1));
  EXPECT_TRUE(WorkersShareCpus({}, {}, 1, 1));
  EXPECT_TRUE(WorkersShareCpus({0}, {1}, 2, 1));  // two prefill workers on CPU 0
  EXPECT_TRUE(WorkersShareCpus({0}, {1}, 1, 3));
}

}  // namespace
}  // namespace tandem::cli
