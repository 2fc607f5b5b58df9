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
}

namespace tandem {

// Builds and starts a server on `address` ("127.0.0.1:0" picks a free port)
// with `services` (borrowed; they must outlive the server). `*bound_port`
// receives the port actually bound. Health reports SERVING once started.
// Errors: Unavailable when the address cannot be bound.
absl::StatusOr<std::unique_ptr<grpc::Server>> StartGrpcServer(const std::string& address,
                                                              const std::vector<grpc::Service*>& services,
                                                              int* bound_port);

}  // namespace tandem
