#!/usr/bin/env bash
# A newcomer's first command: installs what is missing, builds, and generates
# text with the bundled model (models/tandem-shakespeare).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh
build/bin/tandem generate --prompt "${1:-ROMEO:}" --max-tokens 96 --seed 1
