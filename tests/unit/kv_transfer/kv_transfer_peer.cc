// kv_transfer_peer: the far end of the two-process UCX tests.
//
//   kv_transfer_peer <bytes> <seed>
//   kv_transfer_peer --sender <hex descriptor>
//
// Creates a UcxTransport (transports from UCX_TLS in the environment),
// registers a zeroed region of <bytes>, prints "DESC <hex descriptor>" and
// waits for a line on stdin. On "done" it checks that byte i of the region is
// PatternByte(seed, i), prints "OK" or "MISMATCH <offset>" and exits 0 or 1.
// End of input exits 3, bad arguments or setup failures 2. A 60 s alarm ends
// it if the parent never answers.
// With --sender it is the other side: it puts 16 KiB spans into the region
// the descriptor names, round after round with a flush each, printing
// "SENDING" after the first flush, until the parent kills it (the alarm
// bounds it too). Exit 1 when a put or flush fails.
// Thread-safety: single-threaded program (plus the transport's own thread).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "kv_transfer/ucx/ucx_transport.h"
#include "tests/unit/kv_transfer/test_pattern.h"

namespace {

int RunSender(const std::string& hex) {
  auto descriptor = tandem::MemoryDescriptor::Deserialize(absl::HexStringToBytes(hex));
  auto transport = tandem::UcxTransport::Create(tandem::UcxTransportOptions{});
  if (!descriptor.ok() || !transport.ok()) return 2;
  constexpr uint64_t kSpan = 16 * 1024;
  const uint64_t spans = descriptor->length / kSpan;
  auto* region = static_cast<uint8_t*>(std::aligned_alloc(64, spans * kSpan));
  std::memset(region, 0x5a, spans * kSpan);
  if (spans == 0 || !(*transport)->RegisterMemory(region, spans * kSpan).ok()) return 2;
  auto session = (*transport)->Connect(*descriptor);
  auto fail = [](const absl::Status& st) {
    std::fprintf(stderr, "sender: %s\n", st.ToString().c_str());
    return 1;
  };
  if (!session.ok()) return fail(session.status());
  for (int round = 0;; ++round) {
    for (uint64_t j = 0; j < spans; ++j) {
      if (absl::Status st = (*session)->Put(j * kSpan, j * kSpan, kSpan); !st.ok()) return fail(st);
    }
    if (absl::Status st = (*session)->Flush(absl::Seconds(10)); !st.ok()) return fail(st);
    if (round == 0) std::cout << "SENDING" << std::endl;
  }
}

}  // namespace

int main(int argc, char** argv) {
  alarm(60);
  if (argc == 3 && std::string(argv[1]) == "--sender") return RunSender(argv[2]);
  uint64_t bytes = 0;
  uint64_t seed = 0;
  if (argc != 3 || !absl::SimpleAtoi(argv[1], &bytes) || !absl::SimpleAtoi(argv[2], &seed) ||
      bytes == 0) {
    std::fprintf(stderr, "usage: kv_transfer_peer <bytes> <seed>\n");
    return 2;
  }
  auto transport = tandem::UcxTransport::Create(tandem::UcxTransportOptions{});
  if (!transport.ok()) {
    std::fprintf(stderr, "peer: %s\n", transport.status().ToString().c_str());
    return 2;
  }
  auto* region = static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
  std::memset(region, 0, bytes);
  auto descriptor = (*transport)->RegisterMemory(region, bytes);
  if (!descriptor.ok()) {
    std::fprintf(stderr, "peer: %s\n", descriptor.status().ToString().c_str());
    return 2;
  }
  std::cout << "DESC " << absl::BytesToHexString(descriptor->Serialize()) << std::endl;

  std::string line;
  int code = 3;
  while (std::getline(std::cin, line)) {
    if (line != "done") continue;
    code = 0;
    for (uint64_t i = 0; i < bytes; ++i) {
      if (region[i] != tandem::kv_transfer_test::PatternByte(seed, i)) {
        std::cout << "MISMATCH " << i << std::endl;
        code = 1;
        break;
      }
    }
    if (code == 0) std::cout << "OK" << std::endl;
    break;
  }
  transport->reset();
  std::free(region);
  return code;
}
