// The flags both worker binaries share (model, addresses, router, KV
// transport, engine flags). Thread-safety: single-threaded use in main().
#pragma once

#include <cstdint>
#include <string>

#include "common/cli/cli_flags.h"
#include "common/grpc/cluster_tls_flags.h"
#include "worker/engine_flags.h"

namespace tandem::cli {

struct WorkerFlags {
  std::string model;
  std::string host = "127.0.0.1";
  int64_t port = 0;
  std::string worker_id;
  std::string router;
  std::string kv_transport = "ucx";
  int64_t tp = 1;
  int64_t drain_timeout_s = 30;
  bool help = false;
  EngineFlags engine;
  ClusterTlsFlags cluster_tls;  // mTLS with the router (or --insecure-cluster)

  void Register(FlagSet& f, const std::string& role) {
    f.AddString("model", &model, "HuggingFace model directory (default: the bundled model)");
    f.AddString("host", &host, "address to listen on and to advertise (default 127.0.0.1)");
    f.AddInt("port", &port, "port (default 0: a free one)");
    f.AddString("worker-id", &worker_id, "this worker's id (default " + role + "-<port>)");
    f.AddString("router", &router,
                "the router's cluster listener to register with (its --cluster-host:--cluster-port, default port "
                "50052; not its public port): host:port, or several comma-separated (router replicas)");
    f.AddString("kv-transport", &kv_transport,
                "ucx (default: puts checked against the decode worker's reservations), ucx-rma (one-sided puts "
                "where UCX_TLS allows: unchecked) or loopback");
    f.AddInt("tp", &tp, "tensor-parallel ranks (threads of this process, each with its own KV pool; default 1)");
    f.AddInt("drain-timeout-s", &drain_timeout_s,
             "on SIGTERM, how long requests in flight may run on before the worker exits (default 30)");
    f.AddBool("help", &help, "show this help");
    engine.Register(f);
    cluster_tls.Register(f);
  }
};

}  // namespace tandem::cli
