// Runtime ISA detection for the CPU kernels: cpuid for what the core has,
// XGETBV for what the OS saves on a context switch (AVX-512 state, AMX tile
// data), and on Linux the arch_prctl request that AMX needs before the first
// tile instruction. The cap (TANDEM_CPU_ISA or SetCpuIsa) lets a test run the
// AVX2 kernels on an AVX-512 machine.
// Thread-safety: detection runs once (function-local static); the cap is an
// atomic, so reading it is safe from any thread.
#include <atomic>
#include <cstdlib>
#include <cstring>

#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "engine/kernels/int8_matmul.h"
#include "engine/kernels/ops.h"

namespace tandem::kernels {
namespace {

bool Bit(unsigned reg, int bit) { return (reg >> bit) & 1u; }

uint64_t ReadXcr0() {
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

// Linux keeps AMX tile data off until a process asks (since 5.16).
bool RequestAmxPermission() {
#if defined(__linux__)
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

CpuIsa Detect() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return CpuIsa::kAvx2;
  const bool osxsave = Bit(c, 27);
  // The build's baseline already assumes AVX2/FMA/F16C; anything below runs the same code.
  if (!osxsave) return CpuIsa::kAvx2;
  const uint64_t xcr0 = ReadXcr0();
  const bool os_zmm = (xcr0 & 0xe6) == 0xe6;          // SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM
  const bool os_amx = (xcr0 & (3ull << 17)) == (3ull << 17);  // XTILECFG, XTILEDATA
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return CpuIsa::kAvx2;
  const bool avx512 = os_zmm && Bit(b, 16) && Bit(b, 17) && Bit(b, 30) && Bit(b, 31);  // F DQ BW VL
  const bool amx = os_amx && Bit(d, 22) && Bit(d, 24);  // AMX-BF16, AMX-TILE
  unsigned a1 = 0, b1, c1, d1;
  __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1);
  const bool bf16 = avx512 && Bit(a1, 5);
  if (!avx512) return CpuIsa::kAvx2;
  if (!bf16) return CpuIsa::kAvx512;
  if (amx && RequestAmxPermission()) return CpuIsa::kAmx;
  return CpuIsa::kAvx512Bf16;
}

bool ParseIsa(const char* s, CpuIsa* out) {
  for (CpuIsa isa : {CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Bf16, CpuIsa::kAmx}) {
    if (CpuIsaName(isa) == s) {
      *out = isa;
      return true;
    }
  }
  return false;
}

CpuIsa Clamp(CpuIsa want) { return want < DetectedCpuIsa() ? want : DetectedCpuIsa(); }

std::atomic<CpuIsa>& Active() {
  static std::atomic<CpuIsa> active = [] {
    CpuIsa isa = DetectedCpuIsa();
    const char* env = std::getenv("TANDEM_CPU_ISA");
    CpuIsa cap;
    if (env != nullptr && *env != '\0' && ParseIsa(env, &cap)) isa = Clamp(cap);
    return isa;
  }();
  return active;
}

}  // namespace

CpuIsa DetectedCpuIsa() {
  static const CpuIsa detected = Detect();
  return detected;
}

bool CpuHasAvx512Vnni() {
  static const bool vnni = [] {
    unsigned a, b, c, d;
    if (DetectedCpuIsa() < CpuIsa::kAvx512 || !__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    return Bit(c, 11);  // AVX512_VNNI (the OS saves zmm state: checked by the level)
  }();
  return vnni;
}

CpuIsa ActiveCpuIsa() { return Active().load(std::memory_order_relaxed); }

CpuIsa SetCpuIsa(CpuIsa isa) {
  const CpuIsa now = Clamp(isa);
  Active().store(now, std::memory_order_relaxed);
  return now;
}

std::string_view CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kAvx512:
      return "avx512";
    case CpuIsa::kAvx512Bf16:
      return "avx512_bf16";
    case CpuIsa::kAmx:
      return "amx";
  }
  return "unknown";
}

}  // namespace tandem::kernels
