#include "tools/tandem/up_command.h"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <optional>
#include <set>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/cli/flag_files.h"
#include "common/grpc/cluster_tls.h"
#include "common/process/shared_core_omp_env.h"
#include "grpcpp/grpcpp.h"
#include "tandem/v1/worker.grpc.pb.h"
#include "common/cli/cli_flags.h"
#include "router/api_key_flags.h"
#include "router/openai/http_api_flags.h"
#include "router/public_tls_flags.h"
#include "router/router_flags.h"
#include "tools/tandem/cluster_cert_dir.h"
#include "tools/tandem/cluster_member.h"
#include "tools/tandem/cpu_list.h"
#include "tools/tandem/restart_budget.h"
#include "worker/engine_flags.h"

namespace tandem::cli {
namespace {

struct UpFlags {
  std::string model;
  int64_t prefill_workers = 1;
  int64_t decode_workers = 1;
  int64_t prefill_tp = 1;
  int64_t decode_tp = 1;
  int64_t port = 50051;
  int64_t cluster_port = 0;  // the router's control plane; 0: a free one
  std::string kv_transport = "ucx";
  int64_t start_timeout_s = 120;
  int64_t max_restarts = 5;  // per minute, for each member
  int64_t metrics_base_port = -1;  // -1: no metrics servers
  std::string prefill_cores;       // CPU lists ("0-3,6"); empty: not pinned
  std::string decode_cores;
  std::string cluster_certs;  // a `tandem certs` directory; empty: an ephemeral CA
  bool insecure_cluster = false;
  bool help = false;
  EngineFlags engine;  // passed through to every worker
  RouterTuningFlags router;  // passed through to the router
  ApiKeyFlags api_keys;      // likewise
  PublicTlsFlags public_tls;  // likewise
  HttpApiFlags http;          // likewise
};

std::filesystem::path BinDir() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path(".") : exe.parent_path();
}

// The flags of `only` as they appeared on our command line (engine flags for
// the workers, tuning flags for the router), to pass on as given.
std::vector<std::string> PassThrough(const std::vector<std::string>& args, const FlagSet& only) {
  std::vector<std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string name = args[i].rfind("--", 0) == 0 ? args[i].substr(2) : "";
    const size_t eq = name.find('=');
    const std::string bare = name.substr(0, eq);
    if (bare.empty() || !only.Has(bare)) continue;
    out.push_back(args[i]);
    if (eq == std::string::npos && !only.IsBool(bare) && i + 1 < args.size()) out.push_back(args[++i]);
  }
  return out;
}

// Polls the router's cluster listener (`router`) until `prefill` and
// `decode` workers are registered (and not draining). The registry answers
// whatever the router's health says.
bool WaitForWorkers(const std::string& router, const ClusterTls& tls, int prefill, int decode,
                    std::chrono::seconds timeout) {
  auto stub = v1::WorkerRegistry::NewStub(tls.Dial(router, tls::ClusterRole::kRouter));
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::ListWorkersResponse resp;
    if (stub->ListWorkers(&ctx, v1::ListWorkersRequest(), &resp).ok()) {
      int p = 0, d = 0;
      for (const auto& w : resp.workers()) {
        if (!w.draining()) (w.role() == v1::WORKER_ROLE_PREFILL ? p : d)++;
      }
      if (p >= prefill && d >= decode) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// mTLS inside the cluster for `tandem up`'s children: the certificates of
// `dir` (a `tandem certs` directory), or, when it is empty, an ephemeral CA
// and role certificates made now in a fresh private directory (the CA's key
// is never written: nothing else can be signed with it). `*made` receives
// that directory, for removal at exit. Returns the router's ClusterTls,
// which `tandem up` itself dials with.
absl::StatusOr<std::shared_ptr<const ClusterTls>> PrepareClusterCerts(std::filesystem::path* dir,
                                                                     std::filesystem::path* made) {
  if (dir->empty()) {
    std::error_code ec;
    std::string tmpl = (std::filesystem::temp_directory_path(ec) / "tandem-up-certs-XXXXXX").string();
    if (ec || ::mkdtemp(tmpl.data()) == nullptr) {  // 0700
      return absl::UnavailableError(absl::StrCat("cannot make a private directory for the cluster certificates: ",
                                                 ec ? ec.message() : std::strerror(errno)));
    }
    *dir = tmpl;
    *made = tmpl;
    ClusterCertOptions options;
    options.write_ca_key = false;
    if (absl::Status st = WriteClusterCerts(*dir, options); !st.ok()) return st;
  }
  std::string pem[3];
  const std::filesystem::path files[3] = {CaFile(*dir), CertFile(*dir, tls::ClusterRole::kRouter),
                                          KeyFile(*dir, tls::ClusterRole::kRouter)};
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::string> text = ReadFlagFile("cluster-certs", files[i].string());
    if (!text.ok()) return text.status();
    pem[i] = *std::move(text);
  }
  absl::StatusOr<std::shared_ptr<const ClusterTls>> tls =
      ClusterTls::FromPem(pem[0], pem[1], pem[2], tls::ClusterRole::kRouter);
  if (!tls.ok()) return absl::InvalidArgumentError(absl::StrCat("--cluster-certs: router: ", tls.status().message()));
  return tls;
}

}  // namespace

int RunUp(const std::vector<std::string>& args) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  FlagSet flags, engine_only, router_only;
  UpFlags f;
  flags.AddString("model", &f.model, "HuggingFace model directory (default: the bundled model)");
  flags.AddInt("prefill-workers", &f.prefill_workers, "prefill worker processes (default 1)");
  flags.AddInt("decode-workers", &f.decode_workers, "decode worker processes (default 1)");
  flags.AddInt("prefill-tp", &f.prefill_tp, "tensor-parallel ranks of each prefill worker (default 1)");
  flags.AddInt("decode-tp", &f.decode_tp, "tensor-parallel ranks of each decode worker (default 1)");
  flags.AddInt("port", &f.port, "the router's public port, the cluster's endpoint (default 50051; 0: a free one)");
  flags.AddInt("cluster-port", &f.cluster_port,
               "the router's cluster port, where the workers register (default 0: a free one, printed with the "
               "router; must differ from --port)");
  flags.AddString("kv-transport", &f.kv_transport, "KV transport between workers: ucx (default)");
  flags.AddInt("metrics-base-port", &f.metrics_base_port,
               "serve each process's Prometheus metrics on 127.0.0.1 from this port up: the router, then the "
               "prefill workers, then the decode workers (default: off)");
  flags.AddString("prefill-cores", &f.prefill_cores,
                  "pin the prefill workers to these CPUs, e.g. 0 or 0-3,8 (default: not pinned; their OpenMP "
                  "teams then size to the list)");
  flags.AddString("decode-cores", &f.decode_cores, "pin the decode workers to these CPUs (default: not pinned)");
  flags.AddInt("start-timeout-s", &f.start_timeout_s, "longest wait for the cluster to come up (default 120)");
  flags.AddInt("max-restarts", &f.max_restarts,
               "restart a member that exits, with exponential backoff, at most this many times a minute each; "
               "then stop the cluster (default 5; 0: stop the cluster when any member exits)");
  flags.AddString("cluster-certs", &f.cluster_certs,
                  "mTLS inside the cluster with the certificates `tandem certs --out DIR` wrote there (default: an "
                  "ephemeral CA and certificates made at start, removed at exit)");
  flags.AddBool("insecure-cluster", &f.insecure_cluster,
                "plaintext gRPC between the router and the workers instead of mTLS (each member warns)");
  flags.AddBool("help", &f.help, "show this help");
  f.engine.Register(flags);
  EngineFlags scratch;
  scratch.Register(engine_only);
  f.router.Register(flags);  // the router's tuning flags, passed on to it as given
  RouterTuningFlags router_scratch;
  router_scratch.Register(router_only);
  f.api_keys.Register(flags);  // the public API's keys: the router's too
  ApiKeyFlags api_keys_scratch;
  api_keys_scratch.Register(router_only);
  f.public_tls.Register(flags);  // and its TLS
  PublicTlsFlags public_tls_scratch;
  public_tls_scratch.Register(router_only);
  f.http.Register(flags);  // the OpenAI HTTP API: the router serves it
  HttpApiFlags http_scratch;
  http_scratch.Register(router_only);
  if (absl::Status st = flags.Parse(args); !st.ok() || f.help) {
    (st.ok() ? std::cout : std::cerr) << (st.ok() ? "" : std::string(st.message()) + "\n")
                                      << "usage: tandem up [--model DIR] [--prefill-workers N] [--decode-workers M] "
                                         "[--prefill-tp A] [--decode-tp B] [--port P] [--cluster-port C] "
                                         "[--metrics-base-port B] "
                                         "[--prefill-cores LIST] [--decode-cores LIST] [engine flags for the workers] "
                                         "[tuning flags for the router]\n"
                                      << flags.Usage();
    return st.ok() ? 0 : 2;
  }
  if (f.prefill_workers < 1 || f.prefill_workers > 64 || f.decode_workers < 1 || f.decode_workers > 64) {
    std::cerr << "tandem up: --prefill-workers and --decode-workers must be in [1, 64]\n";
    return 2;
  }
  RouterListenFlags listen;  // as the router will check them
  listen.port = f.port;
  listen.cluster_port = f.cluster_port;
  if (absl::Status st = listen.Validate(); !st.ok()) {
    std::cerr << "tandem up: " << st.message() << "\n";
    return 2;
  }
  if (absl::Status st = f.http.Validate(); !st.ok()) {  // before anything starts
    std::cerr << "tandem up: " << st.message() << "\n";
    return 2;
  }
  if (absl::Status st = f.router.Validate(); !st.ok()) {  // before anything starts
    std::cerr << "tandem up: " << st.message() << "\n";
    return 2;
  }
  if (absl::Status st = f.public_tls.Load().status(); !st.ok()) {  // the router would refuse them
    std::cerr << "tandem up: " << st.message() << "\n";
    return 2;
  }
  if (absl::Status st = f.api_keys.Load().status(); !st.ok()) {  // the router would refuse them
    std::cerr << "tandem up: " << st.message() << "\n";
    return 2;
  }
  if (f.max_restarts < 0 || f.max_restarts > 1000) {
    std::cerr << "tandem up: --max-restarts must be in [0, 1000]\n";
    return 2;
  }
  if (f.prefill_tp < 1 || f.prefill_tp > 64 || f.decode_tp < 1 || f.decode_tp > 64) {
    std::cerr << "tandem up: --prefill-tp and --decode-tp must be in [1, 64]\n";
    return 2;
  }
  const int64_t num_processes = 1 + f.prefill_workers + f.decode_workers;
  if (f.metrics_base_port != -1 && (f.metrics_base_port < 1 || f.metrics_base_port + num_processes - 1 > 65535)) {
    std::cerr << "tandem up: --metrics-base-port must be in [1, " << 65535 - (num_processes - 1) << "] for "
              << num_processes << " processes (each takes the next port)\n";
    return 2;
  }
  if (f.insecure_cluster && !f.cluster_certs.empty()) {
    std::cerr << "tandem up: --insecure-cluster cannot go with --cluster-certs\n";
    return 2;
  }
  std::filesystem::path cert_dir = f.cluster_certs, made_cert_dir;
  absl::Cleanup remove_certs = [&made_cert_dir] {
    std::error_code ec;
    if (!made_cert_dir.empty()) std::filesystem::remove_all(made_cert_dir, ec);
  };
  std::shared_ptr<const ClusterTls> cluster_tls = ClusterTls::Insecure();
  if (!f.insecure_cluster) {
    absl::StatusOr<std::shared_ptr<const ClusterTls>> tls = PrepareClusterCerts(&cert_dir, &made_cert_dir);
    if (!tls.ok()) {
      std::cerr << "tandem up: " << tls.status().message() << "\n";
      return tls.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
    }
    cluster_tls = *std::move(tls);
  }
  // Each member's flags for the cluster's gRPC: its role's certificate, or plaintext.
  auto tls_args = [&](tls::ClusterRole role) {
    if (f.insecure_cluster) return std::vector<std::string>{"--insecure-cluster"};
    return std::vector<std::string>{"--tls-ca",  CaFile(cert_dir).string(),     "--tls-cert",
                                    CertFile(cert_dir, role).string(), "--tls-key", KeyFile(cert_dir, role).string()};
  };
  std::vector<int> role_cpus[2];
  for (int role = 0; role < 2; ++role) {
    const std::string& list = role == 0 ? f.prefill_cores : f.decode_cores;
    absl::StatusOr<std::vector<int>> cpus = ParseCpuList(list);
    absl::Status allowed = cpus.ok() ? CheckCpusAllowed(*cpus) : cpus.status();
    if (!allowed.ok()) {
      std::cerr << "tandem up: --" << (role == 0 ? "prefill" : "decode") << "-cores: " << allowed.message() << "\n";
      return 2;
    }
    role_cpus[role] = *std::move(cpus);
  }
  // Workers that share CPUs spin only briefly at OpenMP barriers: a thread
  // spinning on a core another worker needs stalls both teams (measured on 2
  // cores, serving target: 178 output tok/s spinning without bound, 257-301
  // passive), while a thread that sleeps at once pays a futex wake-up at
  // every parallel region of every step. libgomp's GOMP_SPINCOUNT=1000 (tens
  // of microseconds) keeps the back-to-back regions of a step on spinning
  // threads and lets idle teams sleep (2 cores, SmolLM2-135M shape: batch-1
  // ITL 15.6 ms vs 26.6 ms passive; 64 x 256/128 at concurrency 16: 150-158
  // vs 138-154 output tok/s). The user's own OMP_WAIT_POLICY or
  // GOMP_SPINCOUNT wins.
  std::vector<std::string> worker_env;
  if (WorkersShareCpus(role_cpus[0], role_cpus[1], f.prefill_workers, f.decode_workers) &&
      !process::UserSetOmpWaiting()) {
    worker_env.assign(std::begin(process::kSharedCoreOmpEnv), std::end(process::kSharedCoreOmpEnv));
    std::cout << "tandem up: workers share CPUs, so their OpenMP threads spin only briefly before they sleep "
                 "(OMP_WAIT_POLICY=passive GOMP_SPINCOUNT=1000)"
              << std::endl;
  }
  // Process i (router 0, then prefill, then decode workers) gets base + i.
  std::vector<std::string> metrics_urls;
  auto metrics_args = [&](std::vector<std::string>& a) {
    if (f.metrics_base_port == -1) return;
    const int64_t port = f.metrics_base_port + static_cast<int64_t>(metrics_urls.size());
    a.insert(a.end(), {"--metrics-port", std::to_string(port)});
    metrics_urls.push_back(absl::StrCat("http://127.0.0.1:", port, "/metrics"));
  };
  const std::filesystem::path bin = BinDir();
  const std::vector<std::string> model_args = f.model.empty() ? std::vector<std::string>{}
                                                              : std::vector<std::string>{"--model", f.model};
  const std::vector<std::string> engine_args = PassThrough(args, engine_only);
  const std::vector<std::string> router_tuning_args = PassThrough(args, router_only);
  const auto timeout = std::chrono::seconds(f.start_timeout_s);
  std::vector<ClusterMember> children;  // router first
  auto stop_all = [&children] {
    for (auto it = children.rbegin(); it != children.rend(); ++it) it->process->Stop(std::chrono::milliseconds(5000));
    children.clear();
  };

  std::vector<std::string> router_args = model_args;
  router_args.insert(router_args.end(), {"--host", "127.0.0.1", "--port", std::to_string(f.port), "--cluster-port",
                                         std::to_string(f.cluster_port)});
  router_args.insert(router_args.end(), router_tuning_args.begin(), router_tuning_args.end());
  for (std::string& a : tls_args(tls::ClusterRole::kRouter)) router_args.push_back(std::move(a));
  metrics_args(router_args);
  absl::StatusOr<ClusterMember> router =
      StartClusterMember("router", (bin / "tandem-router").string(), router_args, timeout);
  if (!router.ok()) {
    std::cerr << "tandem up: " << router.status() << "\n";
    return 1;
  }
  const std::string endpoint = router->address;
  const std::string cluster_endpoint = router->cluster_address;
  if (cluster_endpoint.empty()) {  // a router without the line would leave the workers nowhere to register
    std::cerr << "tandem up: the router printed no cluster listener line\n";
    router->process->Stop(std::chrono::milliseconds(5000));
    return 1;
  }
  // A restarted router must come back where the workers and clients look for
  // it: the clients on the public port, the workers on the cluster port.
  auto port_of = [](const std::string& address) { return address.substr(address.rfind(':') + 1); };
  for (size_t i = 0; i + 1 < router->args.size(); ++i) {
    if (router->args[i] == "--port") router->args[i + 1] = port_of(endpoint);
    if (router->args[i] == "--cluster-port") router->args[i + 1] = port_of(cluster_endpoint);
    if (router->args[i] == "--http-port" && !router->http_address.empty()) {
      router->args[i + 1] = port_of(router->http_address);
    }
  }
  const std::string http_endpoint = router->http_address;
  children.push_back(*std::move(router));
  for (int role = 0; role < 2; ++role) {
    const int64_t count = role == 0 ? f.prefill_workers : f.decode_workers;
    const std::string kind = role == 0 ? "prefill" : "decode";
    for (int64_t i = 0; i < count; ++i) {
      std::vector<std::string> a = model_args;
      a.insert(a.end(), {"--host", "127.0.0.1", "--port", "0", "--router", cluster_endpoint, "--kv-transport",
                         f.kv_transport, "--worker-id", absl::StrCat(kind, "-", i), "--tp",
                         std::to_string(role == 0 ? f.prefill_tp : f.decode_tp)});
      a.insert(a.end(), engine_args.begin(), engine_args.end());
      for (std::string& t : tls_args(role == 0 ? tls::ClusterRole::kPrefillWorker : tls::ClusterRole::kDecodeWorker)) {
        a.push_back(std::move(t));
      }
      metrics_args(a);
      process::ChildOptions options;
      options.cpus = role_cpus[role];
      options.env = worker_env;
      absl::StatusOr<ClusterMember> w = StartClusterMember(
          absl::StrCat(kind, "-", i), (bin / absl::StrCat("tandem-", kind, "-worker")).string(), a, timeout, options);
      if (!w.ok()) {
        std::cerr << "tandem up: " << w.status() << "\n";
        stop_all();
        return 1;
      }
      children.push_back(*std::move(w));
    }
  }
  if (!WaitForWorkers(cluster_endpoint, *cluster_tls, static_cast<int>(f.prefill_workers),
                      static_cast<int>(f.decode_workers), timeout)) {
    std::cerr << "tandem up: workers did not register with the router in time\n";
    stop_all();
    return 1;
  }
  for (size_t i = 0; i < children.size(); ++i) {
    const ClusterMember& c = children[i];
    std::cout << "tandem up: " << c.name << " pid " << c.process->pid() << " on " << c.address;
    if (i < metrics_urls.size()) std::cout << ", metrics on " << metrics_urls[i];
    if (!c.cluster_address.empty()) std::cout << ", cluster listener on " << c.cluster_address;
    std::cout << "\n";
  }
  std::cout << "tandem up: cluster gRPC "
            << (f.insecure_cluster ? std::string("in PLAINTEXT (--insecure-cluster)")
                                   : absl::StrCat("over mTLS (certificates in ", cert_dir.string(),
                                                  made_cert_dir.empty() ? "" : ", ephemeral", ")"))
            << std::endl;
  std::cout << "tandem up: ready on " << endpoint << " (" << f.prefill_workers << " prefill, " << f.decode_workers
            << " decode workers); try: tandem client --addr " << endpoint << " --prompt \"ROMEO:\"" << std::endl;
  if (!http_endpoint.empty()) {
    std::cout << "tandem up: OpenAI HTTP API on http://" << http_endpoint << "/v1; try: curl http://" << http_endpoint
              << "/v1/completions -H 'Content-Type: application/json' -d '{\"prompt\": \"ROMEO:\", \"max_tokens\": 16}'"
              << std::endl;
  }

  // Supervision: a member that exits is restarted after its backoff (the
  // rest keep serving; the router's failover covers the gap), until its
  // restart budget is spent or a stop signal arrives.
  RestartPolicy policy;
  policy.max_restarts = static_cast<int>(f.max_restarts);
  std::vector<RestartBudget> budgets(children.size(), RestartBudget(policy));
  std::vector<std::optional<std::chrono::steady_clock::time_point>> restart_at(children.size());
  int exit_code = 0;
  bool stop = false;
  while (!stop) {
    timespec wait{0, 200 * 1000 * 1000};
    const int sig = sigtimedwait(&signals, nullptr, &wait);
    if (sig == SIGINT || sig == SIGTERM) {
      std::cout << "tandem up: stopping" << std::endl;
      break;
    }
    const auto now = std::chrono::steady_clock::now();
    for (size_t i = 0; i < children.size() && !stop; ++i) {
      ClusterMember& c = children[i];
      if (!restart_at[i] && c.process->Exited()) {
        const std::optional<std::chrono::milliseconds> delay = budgets[i].OnExit(c.started, now);
        std::cerr << "tandem up: " << c.name << " (pid " << c.process->pid() << ") exited with code "
                  << c.process->exit_code();
        if (!delay) {
          std::cerr << "; " << (f.max_restarts == 0 ? "restarts are off (--max-restarts 0)"
                                                    : absl::StrCat(f.max_restarts, " restarts in the last minute"))
                    << ", stopping the cluster\n";
          exit_code = 1;
          stop = true;
          break;
        }
        std::cerr << "; restarting it in " << delay->count() << " ms (restart " << budgets[i].RestartsInWindow(now)
                  << " of at most " << f.max_restarts << " a minute)\n";
        restart_at[i] = now + *delay;
      }
      if (restart_at[i] && now >= *restart_at[i]) {
        restart_at[i].reset();
        if (absl::Status st = RestartClusterMember(c, timeout); !st.ok()) {
          std::cerr << "tandem up: restarting " << c.name << ": " << st << "\n";
          continue;  // its process has exited: the next pass counts it against the budget
        }
        std::cout << "tandem up: " << c.name << " pid " << c.process->pid() << " on " << c.address
                  << (c.cluster_address.empty() ? "" : absl::StrCat(", cluster listener on ", c.cluster_address))
                  << " (restarted)" << std::endl;
      }
    }
  }
  stop_all();
  return exit_code;
}

}  // namespace tandem::cli
