// How a Tandem server process waits for SIGINT/SIGTERM and drains: the stop
// signals are blocked in every thread (so none of gRPC's or OpenMP's threads
// takes them) and main() collects them with sigwait.
// Thread-safety: BlockStopSignals from main() before any thread starts; the
// waits from one thread.
#pragma once

#include <chrono>
#include <functional>

namespace tandem::process {

// Blocks SIGINT and SIGTERM in this thread and every thread started later;
// WaitForStopSignal() then returns the one that arrives.
void BlockStopSignals();
// Also blocks SIGHUP, the conventional "reload your configuration" signal:
// the waits below then return SIGHUP as well, and the caller reloads and
// waits again. Call from main() before any thread starts, only in a process
// that reloads something (elsewhere SIGHUP keeps its default action).
void BlockReloadSignal();
int WaitForStopSignal();
// As WaitForStopSignal(), but 0 when none arrived within `timeout`.
int WaitForStopSignalFor(std::chrono::milliseconds timeout);

// The drain after a stop signal: polls `idle` until it has held for 100 ms
// (so work that was handed between two counters, e.g. a reservation the
// engine's stats do not show yet, is seen) or `timeout` passes. True when
// idle at the end; false when the timeout cut the drain short.
bool WaitUntilIdle(const std::function<bool()>& idle, std::chrono::milliseconds timeout);

}  // namespace tandem::process
