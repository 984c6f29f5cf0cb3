#!/usr/bin/env bash
# Install every package of the repository editable, with the test, lint and docs tools and the domain plugins'
# dependencies, into the current environment (see scripts/lib.sh for which one). Idempotent: a second run with
# nothing changed returns in about a second. POLYQUANT_REINSTALL=1 forces the install.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
pq_setup
pq_log "ready: $PQ_PYTHON"
