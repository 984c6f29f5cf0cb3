#!/usr/bin/env bash
# The main job from a fresh clone: install what is needed (scripts/lib.sh), then run `polyquant demo`, which
# quantizes a small trained network with several recipes and prints size, error and speed for each.
# Extra arguments go to `polyquant demo` (e.g. --out DIR).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
pq_setup
exec polyquant demo "$@"
