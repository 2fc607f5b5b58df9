// TSan build only (TANDEM_SANITIZE=thread): tells ThreadSanitizer about
// absl::Mutex, CondVar and Notification, which come from Debian's
// uninstrumented libabsl_synchronization.so.
//
// Why: absl::Mutex takes and releases its lock with atomic operations inside
// that library, which TSan cannot see, so without this every field guarded
// by an absl::Mutex (all of ours: we use no std::mutex) would be reported as
// a race. scripts/sanitize.sh LD_PRELOADs this library; its definitions of
// the Mutex members interpose the library's for the executable and for every
// shared library that calls them (gRPC's gpr_mu is an absl::Mutex too). Each
// forwards to the real function (dlsym RTLD_NEXT) and adds the happens-before
// edges the lock implies: __tsan_release before a lock is given up,
// __tsan_acquire after it is taken. It does not model lock identity, so TSan
// reports no lock-order inversions through these mutexes; races it does.
//
// The TSan entry points are weak: in a process without TSan (ctest, python)
// they are null and this library only forwards.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

extern "C" {
void __tsan_acquire(void* addr) __attribute__((weak));
void __tsan_release(void* addr) __attribute__((weak));
}

namespace {

void Acquire(const void* addr) {
  if (__tsan_acquire != nullptr) __tsan_acquire(const_cast<void*>(addr));
}
void Release(const void* addr) {
  if (__tsan_release != nullptr) __tsan_release(const_cast<void*>(addr));
}

// The real definition of the function whose interposer is at `self` (its
// mangled name found through dladdr, so no absl inline namespace is spelled).
void* Real(void* self) {
  Dl_info info{};
  void* real = nullptr;
  if (dladdr(self, &info) != 0 && info.dli_sname != nullptr) real = dlsym(RTLD_NEXT, info.dli_sname);
  if (real == nullptr) {
    std::fprintf(stderr, "tsan_absl_sync: no real definition behind %p\n", self);
    std::abort();
  }
  return real;
}

// Casts a member-function pointer's target to a plain function taking `this`
// first (the Itanium ABI for non-virtual members).
template <typename Fn, typename Member>
Fn RealOf(Member member) {
  static_assert(sizeof(Member) == 2 * sizeof(void*));
  void* self;
  __builtin_memcpy(&self, &member, sizeof(self));
  return reinterpret_cast<Fn>(Real(self));
}

// The atomic flag Notification::HasBeenNotified reads inline (instrumented):
// it follows mutex_ (notification.h, abseil 20220623).
const void* NotifiedFlag(const absl::Notification* n) {
  return reinterpret_cast<const char*>(n) + sizeof(absl::Mutex);
}

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  static auto real = RealOf<void (*)(Mutex*)>(&Mutex::Lock);
  real(this);
  Acquire(this);
}
void Mutex::ReaderLock() {
  static auto real = RealOf<void (*)(Mutex*)>(&Mutex::ReaderLock);
  real(this);
  Acquire(this);
}
bool Mutex::TryLock() {
  static auto real = RealOf<bool (*)(Mutex*)>(&Mutex::TryLock);
  const bool locked = real(this);
  if (locked) Acquire(this);
  return locked;
}
bool Mutex::ReaderTryLock() {
  static auto real = RealOf<bool (*)(Mutex*)>(&Mutex::ReaderTryLock);
  const bool locked = real(this);
  if (locked) Acquire(this);
  return locked;
}
void Mutex::Unlock() {
  static auto real = RealOf<void (*)(Mutex*)>(&Mutex::Unlock);
  Release(this);
  real(this);
}
void Mutex::ReaderUnlock() {
  static auto real = RealOf<void (*)(Mutex*)>(&Mutex::ReaderUnlock);
  Release(this);
  real(this);
}
void Mutex::LockWhen(const Condition& cond) {
  static auto real = RealOf<void (*)(Mutex*, const Condition&)>(&Mutex::LockWhen);
  real(this, cond);
  Acquire(this);
}
void Mutex::ReaderLockWhen(const Condition& cond) {
  static auto real = RealOf<void (*)(Mutex*, const Condition&)>(&Mutex::ReaderLockWhen);
  real(this, cond);
  Acquire(this);
}
bool Mutex::LockWhenWithTimeout(const Condition& cond, absl::Duration timeout) {
  static auto real = RealOf<bool (*)(Mutex*, const Condition&, absl::Duration)>(&Mutex::LockWhenWithTimeout);
  const bool result = real(this, cond, timeout);
  Acquire(this);  // held whatever the result
  return result;
}
bool Mutex::LockWhenWithDeadline(const Condition& cond, absl::Time deadline) {
  static auto real = RealOf<bool (*)(Mutex*, const Condition&, absl::Time)>(&Mutex::LockWhenWithDeadline);
  const bool result = real(this, cond, deadline);
  Acquire(this);
  return result;
}
// Await* give the lock up while they wait and take it back.
void Mutex::Await(const Condition& cond) {
  static auto real = RealOf<void (*)(Mutex*, const Condition&)>(&Mutex::Await);
  Release(this);
  real(this, cond);
  Acquire(this);
}
bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
  static auto real = RealOf<bool (*)(Mutex*, const Condition&, absl::Duration)>(&Mutex::AwaitWithTimeout);
  Release(this);
  const bool result = real(this, cond, timeout);
  Acquire(this);
  return result;
}
bool Mutex::AwaitWithDeadline(const Condition& cond, absl::Time deadline) {
  static auto real = RealOf<bool (*)(Mutex*, const Condition&, absl::Time)>(&Mutex::AwaitWithDeadline);
  Release(this);
  const bool result = real(this, cond, deadline);
  Acquire(this);
  return result;
}

void CondVar::Wait(Mutex* mu) {
  static auto real = RealOf<void (*)(CondVar*, Mutex*)>(&CondVar::Wait);
  Release(mu);
  real(this, mu);
  Acquire(mu);
}
bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
  static auto real = RealOf<bool (*)(CondVar*, Mutex*, absl::Duration)>(&CondVar::WaitWithTimeout);
  Release(mu);
  const bool result = real(this, mu, timeout);
  Acquire(mu);
  return result;
}
bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time deadline) {
  static auto real = RealOf<bool (*)(CondVar*, Mutex*, absl::Time)>(&CondVar::WaitWithDeadline);
  Release(mu);
  const bool result = real(this, mu, deadline);
  Acquire(mu);
  return result;
}

void Notification::Notify() {
  static auto real = RealOf<void (*)(Notification*)>(&Notification::Notify);
  Release(this);
  Release(NotifiedFlag(this));  // for the inline HasBeenNotified()
  real(this);
}
void Notification::WaitForNotification() const {
  static auto real = RealOf<void (*)(const Notification*)>(&Notification::WaitForNotification);
  real(this);
  Acquire(this);
}
bool Notification::WaitForNotificationWithTimeout(absl::Duration timeout) const {
  static auto real =
      RealOf<bool (*)(const Notification*, absl::Duration)>(&Notification::WaitForNotificationWithTimeout);
  const bool notified = real(this, timeout);
  if (notified) Acquire(this);
  return notified;
}
bool Notification::WaitForNotificationWithDeadline(absl::Time deadline) const {
  static auto real =
      RealOf<bool (*)(const Notification*, absl::Time)>(&Notification::WaitForNotificationWithDeadline);
  const bool notified = real(this, deadline);
  if (notified) Acquire(this);
  return notified;
}

ABSL_NAMESPACE_END
}  // namespace absl
