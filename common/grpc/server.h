// Starting a gRPC server the way every Tandem process does: listening on one
// address, with grpc.health.v1 and server reflection enabled (so grpcurl and
// any language's client work unchanged).
// Thread-safety: call from main(); the returned server is thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/server.h"

namespace grpc {
class Service;
class ServerCredentials;
}

namespace tandem {

// Builds and starts a server on `address` ("127.0.0.1:0" picks a free port,
// "[::1]:0" the same on IPv6) with `services` (borrowed; they must outlive
// the server). `*bound_port` receives the port actually bound. Health ("",
// the whole server) reports SERVING once started, or NOT_SERVING when
// `serving` is false (a server that is not ready until later: SetHealth).
// `credentials`: null for plaintext, else e.g. TLS (grpc::SslServerCredentials).
// Errors: Unavailable when the address cannot be bound.
absl::StatusOr<std::unique_ptr<grpc::Server>> StartGrpcServer(
    const std::string& address, const std::vector<grpc::Service*>& services, int* bound_port, bool serving = true,
    std::shared_ptr<grpc::ServerCredentials> credentials = nullptr);

// Sets the grpc.health.v1 status of the whole server ("") and of each of
// `services` (full names, e.g. "tandem.v1.Generation"), as Kubernetes'
// gRPC probes and load balancers read it.
void SetHealth(grpc::Server* server, bool serving, const std::vector<std::string>& services = {});

}  // namespace tandem
