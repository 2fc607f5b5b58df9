// build/bin/tandem: Tandem's command-line tool: generate in this process,
// serve the gRPC API, or act as a streaming client.
#include <iostream>
#include <string>
#include <vector>

#include "tools/tandem/certs_command.h"
#include "tools/tandem/client_command.h"
#include "tools/tandem/generate_command.h"
#include "tools/tandem/health_command.h"
#include "tools/tandem/perplexity_command.h"
#include "tools/tandem/quantize_command.h"
#include "tools/tandem/serve_command.h"
#include "tools/tandem/up_command.h"

int main(int argc, char** argv) {
  const std::string usage =
      "usage: tandem <command> [flags]\n"
      "commands:\n"
      "  generate   generate text for prompts with a local model, in this process\n"
      "  serve      serve the gRPC Generation API (router, prefill and decode in one process)\n"
      "  client     stream one generation from a Tandem endpoint\n"
      "  up         start the local disaggregated cluster (router + prefill + decode workers)\n"
      "  certs      make a cluster CA and role certificates for mTLS inside the cluster\n"
      "  perplexity the perplexity of a model over a text file (windows from an empty cache)\n"
      "  quantize   write a quantized checkpoint (SmoothQuant W8A8, compressed-tensors) from a float one\n"
      "  health     ask a server's grpc.health.v1 status (exit 0 when SERVING; a probe for TLS ports)\n"
      "(each command takes --help)\n";
  if (argc < 2) {
    std::cerr << usage;
    return 2;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "generate") return tandem::cli::RunGenerate(args);
  if (command == "serve") return tandem::cli::RunServe(args);
  if (command == "client") return tandem::cli::RunClient(args);
  if (command == "up") return tandem::cli::RunUp(args);
  if (command == "certs") return tandem::cli::RunCerts(args);
  if (command == "health") return tandem::cli::RunHealth(args);
  if (command == "perplexity") return tandem::cli::RunPerplexity(args);
  if (command == "quantize") return tandem::cli::RunQuantize(args);
  if (command == "--help" || command == "help") {
    std::cout << usage;
    return 0;
  }
  std::cerr << "tandem: unknown command '" << command << "'\n" << usage;
  return 2;
}
