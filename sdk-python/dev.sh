#!/usr/bin/env bash
# Python plugins: set-up, build and unit tests. Needs python3 (3.10 or later) with venv.
#
#   sdk-python/dev.sh setup      install componentize-py 0.25.1 into target/py-tools (once),
#                                and libfaketime (apt-get install faketime) if it is missing
#   sdk-python/dev.sh build [SRC_DIR [OUT.wasm [WORLD]]]
#                                build SRC_DIR/app.py into a component against wit/, for WORLD
#                                (default check); SRC_DIR defaults to plugins/py-status-check,
#                                OUT to target/wasm32-wasip2/release/NAME.wasm, NAME being
#                                SRC_DIR's name with - as _. The same sources give the same bytes
#                                (Linux, with unshare and libfaketime; it says so when not)
#   sdk-python/dev.sh test       run every Python unit test natively, the SDK's and each Python
#                                plugin's (DIR/tests), with no WebAssembly involved
#
# A Python plugin is a directory under plugins/ with an app.py and no Cargo.toml.
set -euo pipefail
SDK=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$SDK")
TOOLS=$ROOT/target/py-tools
COMPONENTIZE_PY_VERSION=0.25.1

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

need_python() {
  command -v python3 >/dev/null || {
    echo "python3 not found: install Python 3.10 or later (Debian: apt-get install python3 python3-venv)" >&2
    exit 2
  }
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
    echo "$(python3 --version) is too old: runcap's Python SDK needs 3.10 or later" >&2
    exit 2
  }
}

py_plugins() {
  local d
  for d in "$ROOT"/plugins/*/; do
    d=${d%/}
    [ -f "$d/app.py" ] && [ ! -f "$d/Cargo.toml" ] && printf '%s\n' "$d"
  done
}

# libfaketime, which freezes the clocks componentize-py reads during a build (see build).
faketime_lib() {
  local f
  for f in /usr/lib/*/faketime/libfaketimeMT.so.1 /usr/lib*/faketime/libfaketimeMT.so.1; do
    [ -f "$f" ] && { printf '%s\n' "$f"; return 0; }
  done
  return 1
}

setup() {
  need_python
  if ! faketime_lib >/dev/null; then
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
    if command -v apt-get >/dev/null && { [ ${#sudo[@]} -eq 0 ] || sudo -n true 2>/dev/null; }; then
      say "installing faketime with apt-get"
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null ||
        { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
          "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null; }
    else
      say "libfaketime not found: Python plugin builds will not be reproducible (Debian: apt-get install faketime)"
    fi
  fi
  local have
  have=$("$TOOLS/bin/componentize-py" --version 2>/dev/null || true)
  [ "$have" = "componentize-py $COMPONENTIZE_PY_VERSION" ] && return 0
  if [ ! -x "$TOOLS/bin/python" ]; then
    say "creating the build venv in ${TOOLS#"$ROOT"/}"
    python3 -m venv "$TOOLS" || {
      echo "python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
      exit 2
    }
  fi
  say "installing componentize-py==$COMPONENTIZE_PY_VERSION"
  "$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check \
    "componentize-py==$COMPONENTIZE_PY_VERSION"
}

# Copies the files of a Python source tree that a component needs, in name order:
# no tests, bytecode caches, dot-files or virtualenvs.
copy_sources() {
  local from=$1 to=$2 rel
  mkdir -p "$to"
  (cd "$from" && find . -mindepth 1 \( -name '.*' -o -name __pycache__ -o -name tests -o -name node_modules \
      -o -name 'test_*.py' -o -name '*.pyc' -o -name pyvenv.cfg \) -prune \
      -o -type f -print | LC_ALL=C sort) |
    while IFS= read -r rel; do
      mkdir -p "$to/$(dirname "$rel")"
      cp "$from/$rel" "$to/$rel"
    done
}

# The command that runs the rest of a build in a new mount namespace, or nothing when this
# machine cannot make one (then the build is not reproducible).
namespace_cmd() {
  local cmd=(unshare --mount --propagation private)
  [ "$(id -u)" -eq 0 ] || cmd=(unshare --user --map-root-user --mount --propagation private)
  command -v unshare >/dev/null && "${cmd[@]}" true 2>/dev/null && printf '%s\n' "${cmd[@]}"
}

build() {
  local src=${1:-$ROOT/plugins/py-status-check}
  src=$(cd "$src" && pwd)
  local name
  name=$(basename "$src")
  local out=${2:-$ROOT/target/wasm32-wasip2/release/${name//-/_}.wasm}
  local world=${3:-check}
  [ -f "$src/app.py" ] || { echo "$src has no app.py: a Python plugin's module is app.py" >&2; exit 2; }
  setup
  mkdir -p "$(dirname "$out")"
  out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")

  stage=$(mktemp -d "${TMPDIR:-/tmp}/runcap-py-build.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  say "building ${src#"$ROOT"/} into ${out#"$ROOT"/} (world $world)"
  local start=$SECONDS ns=() lib
  mapfile -t ns < <(namespace_cmd)
  if lib=$(faketime_lib) && [ ${#ns[@]} -gt 0 ]; then
    "${ns[@]}" env RUNCAP_FAKETIME_LIB="$lib" "$SDK/dev.sh" build-staged "$src" "$out.tmp" "$world" "$stage"
  else
    [ ${#ns[@]} -gt 0 ] || say "unshare cannot make a mount namespace here: this build is not reproducible"
    [ -n "${lib:-}" ] || say "libfaketime not found (sdk-python/dev.sh setup installs it): this build is not reproducible"
    build_staged "$src" "$out.tmp" "$world" "$stage"
  fi
  mv "$out.tmp" "$out"
  say "$(basename "$out"): $(wc -c <"$out") bytes, sha256 $(sha256sum "$out" | cut -d' ' -f1), $((SECONDS - start))s"
}

# The build itself, in STAGE: in a mount namespace of its own when RUNCAP_FAKETIME_LIB is set.
#
# componentize-py runs the plugin's import in CPython and snapshots the interpreter's memory,
# so whatever the interpreter was told while importing ends up in the component, even in the
# bytes of objects it has freed since. It is told:
#  - the files in STAGE: copies of the plugin and of the SDK, made fresh in name order, and an
#    empty site-packages (without VIRTUAL_ENV, componentize-py adds this machine's own
#    site-packages to the guest's path). A file named __pycache__ in each directory keeps
#    CPython from writing bytecode caches there;
#  - the standard library, support modules and bindings componentize-py unpacks and writes
#    into its temporary directories (TMPDIR is STAGE/tmp);
#  - what the kernel says of all these files: inode numbers, directory order, sizes and link
#    counts are the same at every build because STAGE is a fresh tmpfs; device numbers and
#    times, which are not, build/sandbox.py replaces;
#  - randomness (the str hash secret, `random`'s seed): build/sandbox.py answers getrandom
#    with zeros, and libfaketime glibc's getrandom with a fixed seed;
#  - clocks: libfaketime freezes them at SOURCE_DATE_EPOCH.
build_staged() {
  local src=$1 out=$2 world=$3 stage=$4
  local epoch=${SOURCE_DATE_EPOCH:-315532800}
  [ -n "${RUNCAP_FAKETIME_LIB:-}" ] && mount -t tmpfs -o mode=0755 runcap-py "$stage"
  copy_sources "$src" "$stage/app"
  copy_sources "$SDK/runcap_plugin" "$stage/sdk/runcap_plugin"
  rm "$stage/sdk/runcap_plugin/testing.py"
  mkdir -p "$stage/venv/lib/site-packages" "$stage/tmp"
  local d
  while IFS= read -r d; do : >"$d/__pycache__"; done < <(find "$stage/app" "$stage/sdk" -type d | LC_ALL=C sort)
  find "$stage" -exec touch -h -d "@$epoch" {} +
  local run=(env TMPDIR="$stage/tmp" VIRTUAL_ENV="$stage/venv")
  if [ -n "${RUNCAP_FAKETIME_LIB:-}" ]; then
    run+=(LD_PRELOAD="$RUNCAP_FAKETIME_LIB" FAKETIME_FMT=%s FAKETIME="$epoch" FAKERANDOM_SEED=0
      NO_FAKE_STAT=1 SOURCE_DATE_EPOCH="$epoch" python3 "$SDK/build/sandbox.py" "$stage")
  fi
  (
    cd "$stage"
    "${run[@]}" "$TOOLS/bin/componentize-py" --quiet -d "$ROOT/wit" -w "$world" \
      componentize -p app -p sdk -o "$out" runcap_plugin._component
  )
}

# Runs the unittest suite in DIR/tests (DIR and the SDK importable); prints "RUN BAD SKIPPED" last.
run_suite() {
  local dir=$1
  (cd "$dir" && PYTHONPATH="$SDK:$dir" PYTHONDONTWRITEBYTECODE=1 python3 - <<'EOF'
import traceback, unittest
try:
    suite = unittest.defaultTestLoader.discover("tests")
    result = unittest.TextTestRunner(verbosity=1).run(suite)
    print(result.testsRun, len(result.failures) + len(result.errors), len(result.skipped))
except Exception:
    traceback.print_exc()
    print(1, 1, 0)
EOF
  )
}

test_all() {
  need_python
  local dirs=("$SDK") p passed=0 failed=0 skipped=0 line run bad skip
  while IFS= read -r p; do [ -d "$p/tests" ] && dirs+=("$p"); done < <(py_plugins)
  for p in "${dirs[@]}"; do
    say "unittest: ${p#"$ROOT"/}"
    line=$(run_suite "$p" | tail -n 1)
    read -r run bad skip <<<"$line"
    passed=$((passed + run - bad - skip))
    failed=$((failed + bad))
    skipped=$((skipped + skip))
  done
  echo "python: $passed passed, $failed failed, $skipped skipped"
  [ "$failed" -eq 0 ]
}

case "${1:-}" in
  setup) setup ;;
  build) shift; build "$@" ;;
  build-staged) shift; build_staged "$@" ;;
  test) test_all ;;
  *) sed -n '2,15p' "$0"; exit 2 ;;
esac
