// build/bin/tandem-prefill-worker: a prefill worker process (WorkerMain with
// the prefill role): computes prompts' KV and puts it into decode workers'
// reserved blocks over the KV transport, returning the first token.
// SIGTERM drains: the router is told (draining registration) and new
// Prefill calls get UNAVAILABLE; prefills in flight finish and ship (up to
// --drain-timeout-s); then exit 0.
#include "prefill_worker/prefill_role.h"
#include "worker/worker_main.h"

int main(int argc, char** argv) {
  tandem::PrefillRole role;
  return tandem::WorkerMain(argc, argv, role);
}
