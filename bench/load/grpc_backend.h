// The gRPC backend: each request is one Generation.Generate server stream
// (GenerateCall, a callback reactor) on a shared channel.
// Thread-safety: as RequestBackend.
#pragma once

#include <memory>

#include "bench/load/request_backend.h"

namespace grpc {
class Channel;
}

namespace tandem::bench {

std::unique_ptr<RequestBackend> MakeGrpcBackend(std::shared_ptr<grpc::Channel> channel, RequestOptions options);

}  // namespace tandem::bench
