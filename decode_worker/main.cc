// build/bin/tandem-decode-worker: a decode worker process (WorkerMain with
// the decode role): reserves KV blocks for the router, receives prompts' KV
// from prefill workers over the KV transport, streams decoded tokens.
// SIGTERM drains: the router is told (draining registration) and new Admits
// get UNAVAILABLE; admitted requests decode to the end (up to
// --drain-timeout-s); then exit 0.
#include "decode_worker/decode_role.h"
#include "worker/worker_main.h"

int main(int argc, char** argv) {
  tandem::DecodeRole role;
  return tandem::WorkerMain(argc, argv, role);
}
