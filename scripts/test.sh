#!/usr/bin/env bash
# Run the whole test suite (every package's tests/ and the cross-package tests/) in one pytest process, after
# installing what it needs (scripts/lib.sh). Extra arguments go to pytest:
#   bash scripts/test.sh                   # everything, slow tests included
#   bash scripts/test.sh -m "not slow" -x  # quick local run
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
pq_setup
cd "$PQ_ROOT"

export TRITON_INTERPRET=1     # Triton kernels run on CPU through the interpreter in the tests
export HF_HUB_OFFLINE=1       # nothing may download at test time: fail fast instead
export HF_HUB_DISABLE_TELEMETRY=1
export TOKENIZERS_PARALLELISM=false

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
"$PQ_PYTHON" -m pytest -q -p no:cacheprovider "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

summary="$(grep -E '(passed|failed|error|errors|skipped|deselected|no tests ran).* in [0-9.]+s' "$log" | tail -n 1 | tr -d '=' | xargs)"
echo "pytest summary: ${summary:-<none>} (exit status $status)"
if [[ $status -eq 5 ]]; then
  echo "error: pytest collected no tests; check testpaths in pyproject.toml and the arguments given" >&2
  exit 1
fi
exit "$status"
