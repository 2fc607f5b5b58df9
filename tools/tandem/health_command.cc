#include "tools/tandem/health_command.h"

#include <chrono>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/cli/cli_flags.h"
#include "common/cli/flag_files.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/byte_buffer.h"

namespace tandem::cli {
namespace {

// grpc.health.v1 by hand: Debian's gRPC packages ship the health service
// but not its .proto or client stubs, and the two messages have one field
// each: HealthCheckRequest{string service = 1},
// HealthCheckResponse{ServingStatus status = 1}.
std::string EncodeRequest(const std::string& service) {
  if (service.empty()) return "";
  std::string out = "\x0a";
  for (size_t n = service.size(); ; n >>= 7) {  // length as a varint
    if (n < 0x80) {
      out.push_back(static_cast<char>(n));
      break;
    }
    out.push_back(static_cast<char>((n & 0x7f) | 0x80));
  }
  return out + service;
}

// The status field of a HealthCheckResponse (0 UNKNOWN when absent); -1 when malformed.
int DecodeStatus(const std::string& bytes) {
  if (bytes.empty()) return 0;
  if (bytes.size() < 2 || bytes[0] != 0x08) return -1;
  const unsigned char v = static_cast<unsigned char>(bytes[1]);
  return v < 0x80 ? v : -1;  // the enum's values are 0..3
}

const char* StatusName(int s) {
  switch (s) {
    case 0: return "UNKNOWN";
    case 1: return "SERVING";
    case 2: return "NOT_SERVING";
    case 3: return "SERVICE_UNKNOWN";
    default: return "MALFORMED";
  }
}

}  // namespace

int RunHealth(const std::vector<std::string>& args) {
  FlagSet flags;
  std::string addr, service, tls_ca, tls_cert, tls_key, tls_peer;
  int64_t timeout_s = 5;
  bool help = false;
  flags.AddString("addr", &addr, "the server, host:port");
  flags.AddString("service", &service, "the service to ask about (default: the whole server)");
  flags.AddInt("timeout-s", &timeout_s, "deadline of the call in seconds (default 5)");
  flags.AddString("tls-ca", &tls_ca, "TLS: the PEM CA that signed the server's certificate (default: plaintext)");
  flags.AddString("tls-cert", &tls_cert, "mTLS: this client's PEM certificate (with --tls-key and --tls-ca)");
  flags.AddString("tls-key", &tls_key, "mTLS: the PEM private key of --tls-cert");
  flags.AddString("tls-peer", &tls_peer,
                  "the name the server's certificate must carry instead of --addr's host, e.g. tandem-router");
  flags.AddBool("help", &help, "show this help");
  const absl::Status parsed = flags.Parse(args);
  const bool usage_error = !parsed.ok() || (!help && (addr.empty() || timeout_s < 1 || timeout_s > 3600 ||
                                                      tls_cert.empty() != tls_key.empty() ||
                                                      (!tls_cert.empty() && tls_ca.empty())));
  if (usage_error || help) {
    (usage_error ? std::cerr : std::cout)
        << (parsed.ok() ? "" : std::string(parsed.message()) + "\n")
        << "usage: tandem health --addr HOST:PORT [--service NAME] [--timeout-s N (1..3600)] "
           "[--tls-ca FILE [--tls-cert FILE --tls-key FILE] [--tls-peer NAME]]\n"
           "prints the grpc.health.v1 status; exit 0 when SERVING, 1 otherwise\n"
        << flags.Usage();
    return usage_error ? 2 : 0;
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  grpc::ChannelArguments channel_args;
  if (!tls_ca.empty()) {
    grpc::SslCredentialsOptions options;
    for (auto [flag, path, target] : {std::tuple{"tls-ca", &tls_ca, &options.pem_root_certs},
                                      std::tuple{"tls-cert", &tls_cert, &options.pem_cert_chain},
                                      std::tuple{"tls-key", &tls_key, &options.pem_private_key}}) {
      if (path->empty()) continue;
      absl::StatusOr<std::string> pem = ReadFlagFile(flag, *path);
      if (!pem.ok()) {
        std::cerr << "tandem health: " << pem.status().message() << "\n";
        return 2;
      }
      *target = *std::move(pem);
    }
    credentials = grpc::SslCredentials(options);
    if (!tls_peer.empty()) channel_args.SetSslTargetNameOverride(tls_peer);
  }
  grpc::GenericStub stub(grpc::CreateCustomChannel(addr, credentials, channel_args));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout_s));
  const std::string request = EncodeRequest(service);
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::CompletionQueue cq;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
      stub.PrepareUnaryCall(&ctx, "/grpc.health.v1.Health/Check", request_buffer, &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  cq.Next(&tag, &ok);  // the one event: the call's end (bounded by the deadline)
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  if (!status.ok()) {
    std::cout << "tandem health: " << addr << ": error " << status.error_code() << ": " << status.error_message()
              << std::endl;
    return 1;
  }
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (response.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  const int serving = DecodeStatus(bytes);
  std::cout << StatusName(serving) << std::endl;
  return serving == 1 ? 0 : 1;
}

}  // namespace tandem::cli
