#!/usr/bin/env bash
# Builds tf-admm's wheel and checks what installing it gives, away from the checkout:
#
#   1. `python -m build --wheel` on a copy of the checkout's files (so no stale build/ folder
#      and no egg-info land in the wheel or the checkout);
#   2. the wheel holds tf_admm/ and tflite_export/ and its .dist-info, nothing else (no recipes,
#      bench, tests or *_test.py), and tflite-micro only under the "tflm" extra;
#   3. installed with --no-deps into a fresh virtualenv that sees PYTHON's packages (TensorFlow
#      is not installed again), run from a folder outside the checkout: `import tf_admm,
#      tflite_export` (and every module in them) load from that virtualenv, `python -m
#      tflite_export --help` prints its flags, and `recipes` and `bench` do not import.
#
# Usage: tools/wheel_check.sh [PYTHON]   (default: <repo>/.venv/bin/python, which .ci/run makes;
# it needs `build`, in the [test] extra). Needs PyPI: build fetches setuptools for its isolated
# build environment, as it does for anyone building the wheel.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${1:-$repo/.venv/bin/python}"
# Absolute, since the checks below run from other folders (the directory, not the symlink a
# virtualenv's python is, is resolved: the virtualenv must stay the one given).
python="$(cd "$(dirname "$python")" && pwd)/$(basename "$python")"
log() { echo "== wheel_check: $*" >&2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$SECONDS

# --- 1. Build --------------------------------------------------------------------------------
mkdir "$work/src"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard |
  tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$work/src"
log "python -m build --wheel"
"$python" -m build --wheel --outdir "$work/dist" "$work/src" >"$work/build.log" 2>&1 || {
  tail -n 40 "$work/build.log" >&2
  exit 1
}
wheel="$(ls "$work"/dist/*.whl)"
log "built $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB)"

# --- 2. What the wheel holds -----------------------------------------------------------------
"$python" - "$wheel" <<'EOF'
import email.parser
import sys
import zipfile

names = zipfile.ZipFile(sys.argv[1]).namelist()
dist_info = [n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")][0]
tops = sorted({n.split("/")[0] for n in names})
print(f"{len(names)} files in {', '.join(tops)}:")
for name in names:
    print(f"  {name}")
problems = []
if tops != sorted(["tf_admm", "tflite_export", dist_info]):
    problems.append(f"Expected only tf_admm/, tflite_export/ and {dist_info}/; received: {tops}")
tests = [n for n in names if n.endswith("_test.py") or "/conftest.py" in n]
if tests:
    problems.append(f"Expected no test files; received: {tests}")
for needed in ("tf_admm/__init__.py", "tflite_export/__init__.py", "tflite_export/__main__.py"):
    if needed not in names:
        problems.append(f"Expected {needed} in the wheel; received: missing")
metadata = email.parser.Parser().parsestr(
    zipfile.ZipFile(sys.argv[1]).read(f"{dist_info}/METADATA").decode()
)
micro = [r for r in metadata.get_all("Requires-Dist") or [] if r.startswith("tflite-micro")]
if not micro or any('extra == "tflm"' not in r for r in micro):
    problems.append(f"Expected tflite-micro only under the tflm extra; received: {micro}")
if problems:
    sys.exit("\n".join(problems))
EOF

# --- 3. Installed, outside the checkout ------------------------------------------------------
log "installing into a fresh virtualenv"
"$python" -m venv "$work/venv"
# --system-site-packages would show the base interpreter's packages, not those of PYTHON's
# virtualenv. A .pth file appends the folders on PYTHON's path instead: after the new
# virtualenv's own site-packages, and without running the .pth files inside them, so an
# editable install of tf-admm there stays invisible (the checkout itself is left out too).
new_site="$("$work/venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')"
(cd "$work" && env -u PYTHONPATH "$python" - "$repo" >"$new_site/outer_packages.pth") <<'EOF'
import os
import sys

repo = os.path.realpath(sys.argv[1])
for entry in sys.path:
    path = os.path.realpath(entry) if entry else ""
    # The checkout itself stays out (an editable install puts it there); its .venv, where CI
    # installs TensorFlow, stays in.
    if path and os.path.isdir(path) and path != repo:
        print(path)
EOF
# --ignore-installed: the outer tf-admm (an editable install, say) must not count as installed.
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
  --ignore-installed "$wheel"

mkdir "$work/elsewhere"
cd "$work/elsewhere"
run() { env -u PYTHONPATH TF_CPP_MIN_LOG_LEVEL=2 "$work/venv/bin/python" "$@"; }
run - "$work/venv" <<'EOF'
import importlib
import importlib.util
import os
import pkgutil
import sys

import tf_admm
import tflite_export

venv = os.path.realpath(sys.argv[1])
for package in (tf_admm, tflite_export):
    where = os.path.realpath(package.__file__)
    if not where.startswith(venv + os.sep):
        sys.exit(f"Expected {package.__name__} from the wheel in {venv}; received: {where}")
    # Every module imports (none needs the checkout); tflite_micro is imported only on use.
    modules = [m.name for m in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")]
    for name in modules:
        importlib.import_module(name)
    print(f"import {package.__name__}: {where}, and its {len(modules)} modules")
for name in ("recipes", "bench"):
    if importlib.util.find_spec(name) is not None:
        sys.exit(f"Expected {name} not importable; received: {importlib.util.find_spec(name)}")
    print(f"import {name}: not installed, as it should be")
EOF
status=0
run -m tflite_export --help >"$work/help.txt" 2>&1 || status=$?
# absl's --help exits with 1 after printing the flags.
if [[ "$status" -gt 1 ]] || ! grep -q -- "--model" "$work/help.txt" ||
  ! grep -q "$work/venv/.*tflite_export" "$work/help.txt"; then
  cat "$work/help.txt" >&2
  echo "Expected python -m tflite_export --help to list the flags of the installed CLI" >&2
  exit 1
fi
echo "python -m tflite_export --help: the flags of $(grep -o "$work/venv/[^:]*" "$work/help.txt")"
log "wheel check passed in $((SECONDS - start)) s"
