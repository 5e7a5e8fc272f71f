#!/usr/bin/env bash
# Runs tf-admm's tests with Bazel, offline, doing the one-time set-up first (idempotent):
#
#   1. Bazel: Debian's bazel-bootstrap (Bazel 4.2.3), installed with apt-get when missing.
#   2. Python: the interpreter Bazel runs tests with. $TF_ADMM_PYTHON if set (absolute path),
#      else <repo>/.venv/bin/python; a missing <repo>/.venv is created and `pip install -e
#      '.[test,tflm]'`ed as .ci/run does. Bazel never installs anything itself.
#   3. tools/check_bazel_targets.py: every Python file in exactly one Bazel target.
#   4. bazel test, by default on //... (the tests tagged "manual", which need PyPI for MNIST,
#      are left out); any arguments replace the default target pattern and may add flags:
#
#      tools/bazel_test.sh                                   # everything but manual tests
#      tools/bazel_test.sh //tf_admm/...                     # one subtree
#      tools/bazel_test.sh //recipes:data_test //tests:lenet5_recipe_test  # MNIST ones, by name
#      tools/bazel_test.sh --test_output=all //tf_admm:spec_test
#
# With CI=true the Bazel server and its output tree for this checkout are removed at the end.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

log() { echo "== bazel_test: $*" >&2; }

# --- 1. Bazel ----------------------------------------------------------------------------
if ! command -v bazel >/dev/null 2>&1; then
  log "installing Debian's bazel-bootstrap"
  sudo=()
  if [[ "$(id -u)" != 0 ]]; then sudo=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  if ! "${sudo[@]}" apt-get install -y -qq bazel-bootstrap >/dev/null; then
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq bazel-bootstrap >/dev/null
  fi
fi

# --- 2. Python ---------------------------------------------------------------------------
python="${TF_ADMM_PYTHON:-$repo/.venv/bin/python}"
if [[ "$python" != /* ]]; then
  echo "Expected TF_ADMM_PYTHON to be an absolute path; received: TF_ADMM_PYTHON=$python" >&2
  exit 2
fi
has_deps() {
  "$python" -c 'import importlib.util as u, sys
sys.exit(any(u.find_spec(m) is None for m in ("pytest", "tensorflow", "tf_keras")))' 2>/dev/null
}
if ! has_deps; then
  if [[ -n "${TF_ADMM_PYTHON:-}" ]]; then
    echo "Expected pytest, tensorflow and tf_keras in TF_ADMM_PYTHON; received:" \
      "TF_ADMM_PYTHON=$python" >&2
    exit 2
  fi
  log "setting up $repo/.venv (pip install -e '.[test,tflm]')"
  [[ -x "$python" ]] || python3 -m venv "$repo/.venv"
  "$python" -m pip install --quiet --upgrade pip
  "$python" -m pip install --quiet -e '.[test,tflm]'
fi

# --- 3. Every Python file in exactly one target -------------------------------------------
"$python" tools/check_bazel_targets.py

# --- 4. bazel test -----------------------------------------------------------------------
output="$(mktemp)"
cleanup() {
  rm -f "$output"
  if [[ "${CI:-}" == true ]]; then bazel clean --expunge >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
targets=("$@")
has_pattern=false
for arg in "${targets[@]}"; do
  [[ "$arg" == //* || "$arg" == :* ]] && has_pattern=true
done
"$has_pattern" || targets+=("//...")

log "bazel test ${targets[*]} (python: $python)"
status=0
bazel test --repo_env="TF_ADMM_PYTHON=$python" "${targets[@]}" 2>&1 | tee "$output" ||
  status="${PIPESTATUS[0]}"

# One line per test target in Bazel's summary; counted into a plain closing line.
result='^//[^ ]+ +(\(cached\) )?'
passed="$(grep -cE "${result}PASSED" "$output" || true)"
failed="$(grep -cE "${result}(FAILED|TIMEOUT|FLAKY|INCOMPLETE|NO STATUS)" "$output" || true)"
echo "bazel: $passed passed, $failed failed"
exit "$status"
