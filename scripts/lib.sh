# Shared by scripts/dev-install.sh, scripts/test.sh and scripts/demo.sh: source it, then call pq_setup.
#
# pq_setup picks the Python environment, installs every package of the repository editable (plus the `dev`
# and `all` extras of the root distribution) with constraints.txt when the install is missing or stale, and
# exports PQ_PYTHON (the interpreter) and PQ_ROOT (the repository root).
#
# Which environment:
#   * the active virtual environment ($VIRTUAL_ENV), else
#   * the interpreter named by $PYTHON (default: python3), unless it is externally managed (PEP 668), in which
#     case .venv/ is created with --system-site-packages (so a torch already installed there is reused).
# "Stale" means: no install into this environment yet, a pyproject.toml, constraints.txt or this file changed
# since the last one (fingerprints live in .dev-install/), or a package does not import from this checkout.
# Set POLYQUANT_REINSTALL=1 to force the install.

PQ_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PQ_ROOT

pq_log() { echo "[polyquant] $*" >&2; }

# Package directories (relative to the root) in install order: every core/, kernels/, packages/*/, plugins/*/
# that has a pyproject.toml.
pq_packages() {
  local path
  for path in "$PQ_ROOT"/core "$PQ_ROOT"/kernels "$PQ_ROOT"/packages/*/ "$PQ_ROOT"/plugins/*/; do
    path="${path%/}"
    if [[ -f "$path/pyproject.toml" ]]; then echo "${path#"$PQ_ROOT"/}"; fi
  done
}

# Top-level import names of those packages (src layout: <dir>/src/<name>/__init__.py).
pq_import_names() {
  local dir init
  for dir in $(pq_packages); do
    for init in "$PQ_ROOT/$dir"/src/*/__init__.py; do
      if [[ -f "$init" ]]; then basename "$(dirname "$init")"; fi
    done
  done
}

pq_select_python() {
  if [[ -n "${VIRTUAL_ENV:-}" ]]; then
    PQ_PYTHON="$VIRTUAL_ENV/bin/python"
    return
  fi
  local base="${PYTHON:-python3}"
  if ! command -v "$base" >/dev/null; then
    pq_log "error: $base not found; install Python 3.10+ or set PYTHON=/path/to/python"
    exit 1
  fi
  if "$base" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then :; else
    pq_log "error: polyquant needs Python 3.10+, $base is $("$base" -V 2>&1); set PYTHON=/path/to/python3.11"
    exit 1
  fi
  if "$base" - <<'PY'
import pathlib, sys, sysconfig
managed = (pathlib.Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED").exists()
sys.exit(0 if managed and sys.prefix == sys.base_prefix else 1)
PY
  then
    if [[ ! -x "$PQ_ROOT/.venv/bin/python" ]]; then
      pq_log "$base is externally managed (PEP 668): creating .venv/ (with its site packages visible)"
      "$base" -m venv --system-site-packages "$PQ_ROOT/.venv"
    fi
    PQ_PYTHON="$PQ_ROOT/.venv/bin/python"
  else
    PQ_PYTHON="$("$base" -c 'import sys; print(sys.executable)')"
  fi
}

# The install's fingerprint: a hash of every file that decides what gets installed.
pq_fingerprint() {
  local dir files=("$PQ_ROOT/constraints.txt" "$PQ_ROOT/pyproject.toml" "$PQ_ROOT/scripts/lib.sh")
  for dir in $(pq_packages); do files+=("$PQ_ROOT/$dir/pyproject.toml"); done
  cat "${files[@]}" | "$PQ_PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
}

# Where the fingerprint of the last install into $PQ_PYTHON is kept (one file per environment).
pq_stamp() {
  echo "$PQ_ROOT/.dev-install/$("$PQ_PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(sys.prefix.encode()).hexdigest()[:16])')"
}

# Whether every package imports from this checkout (find_spec only: nothing is imported).
pq_installed_here() {
  # shellcheck disable=SC2046 # one argument per import name
  "$PQ_PYTHON" - "$PQ_ROOT" $(pq_import_names) <<'PY'
import importlib.util, pathlib, sys
root = pathlib.Path(sys.argv[1]).resolve()
for name in sys.argv[2:]:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None or root not in pathlib.Path(spec.origin).resolve().parents:
        sys.exit(1)
PY
}

pq_install() {
  local dir editables=()
  for dir in core kernels; do
    # The root distribution requires both: never let pip look for them on the package index instead.
    if [[ ! -f "$PQ_ROOT/$dir/pyproject.toml" ]]; then
      pq_log "error: $dir/pyproject.toml is missing; the checkout is incomplete"
      exit 1
    fi
  done
  for dir in $(pq_packages); do editables+=(-e "$PQ_ROOT/$dir"); done
  pq_log "installing $((${#editables[@]} / 2)) packages editable into $PQ_PYTHON (constraints: constraints.txt)"
  "$PQ_PYTHON" -m pip --version >/dev/null 2>&1 || "$PQ_PYTHON" -m ensurepip --upgrade >&2
  export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
  # --no-build-isolation below: the build backend (and `editables`, which it needs for editable wheels) must
  # already be in the environment.
  if ! "$PQ_PYTHON" -c 'import hatchling, editables' 2>/dev/null; then
    "$PQ_PYTHON" -m pip install --quiet -c "$PQ_ROOT/constraints.txt" "hatchling>=1.24" "editables>=0.5" >&2
  fi
  # One resolver run: the root's extras name polyquant-<domain>, satisfied by the editable plugin directories.
  "$PQ_PYTHON" -m pip install --quiet --no-build-isolation -c "$PQ_ROOT/constraints.txt" \
    -e "$PQ_ROOT[dev,all]" "${editables[@]}" >&2
}

pq_setup() {
  pq_select_python
  export PQ_PYTHON
  local want stamp
  want="$(pq_fingerprint)"
  stamp="$(pq_stamp)"
  if [[ "${POLYQUANT_REINSTALL:-0}" != 1 && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && pq_installed_here; then
    pq_log "packages already installed in $PQ_PYTHON"
  else
    pq_install
    pq_installed_here || { pq_log "error: the install finished but the packages do not import from $PQ_ROOT"; exit 1; }
    mkdir -p "$(dirname "$stamp")"
    echo "$want" >"$stamp"
  fi
  # Console scripts (polyquant, polyquant-<domain>) of this environment come first on PATH.
  PATH="$("$PQ_PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
  export PATH
}
