// build/bin/tandem: Tandem's command-line tool. `tandem generate` runs the
// engine in this process on one prompt.
#include <iostream>
#include <string>
#include <vector>

#include "tools/tandem/generate_command.h"

int main(int argc, char** argv) {
  const std::string usage =
      "usage: tandem <command> [flags]\n"
      "commands:\n"
      "  generate   generate text for a prompt with a local model (--help for flags)\n";
  if (argc < 2) {
    std::cerr << usage;
    return 2;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "generate") return tandem::cli::RunGenerate(args);
  if (command == "--help" || command == "help") {
    std::cout << usage;
    return 0;
  }
  std::cerr << "tandem: unknown command '" << command << "'\n" << usage;
  return 2;
}
