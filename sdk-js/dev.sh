#!/usr/bin/env bash
# JavaScript plugins: set-up, build and unit tests. Needs Node.js 20 or later and npm.
#
#   sdk-js/dev.sh setup                            install the build tools (npm ci) and link the SDK into each JS plugin
#   sdk-js/dev.sh build [SRC_DIR OUT.wasm [WORLD]] build a JS plugin into a component against wit/ (world: check);
#                                                  without arguments, plugins/js-status-check into
#                                                  target/wasm32-wasip2/release/js_status_check.wasm
#   sdk-js/dev.sh test                             run every node --test unit test: the SDK's and each JS plugin's
#
# A JS plugin is a directory under plugins/ with a package.json and no Cargo.toml.
set -euo pipefail
SDK=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$SDK")

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

need_node() {
  command -v node >/dev/null && command -v npm >/dev/null || {
    echo "node and npm not found: install Node.js 20 or later (Debian: apt-get install nodejs npm)" >&2
    exit 2
  }
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" -ge 20 ] || { echo "Node.js $major is too old: runcap's JS SDK needs 20 or later" >&2; exit 2; }
}

js_plugins() {
  local d
  for d in "$ROOT"/plugins/*/; do
    d=${d%/}
    [ -f "$d/package.json" ] && [ ! -f "$d/Cargo.toml" ] && printf '%s\n' "$d"
  done
}

# npm ci in $1 unless its node_modules was installed from the same package.json and lockfile.
npm_ci() {
  local dir=$1 stamp want
  stamp="$dir/node_modules/.runcap-installed"
  want=$(cat "$dir/package.json" "$dir/package-lock.json" | sha256sum | cut -d' ' -f1)
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  say "npm ci in ${dir#"$ROOT"/}"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  printf '%s\n' "$want" >"$stamp"
}

# A JS plugin resolves `runcap-plugin` (and `runcap-plugin/testing` in its unit tests) to
# this directory through node_modules, as `npm install` of its file: dependency would.
link_sdk() {
  local dir=$1 link="$1/node_modules/runcap-plugin"
  [ "$(readlink "$link" 2>/dev/null)" = "$SDK" ] && return 0
  mkdir -p "$dir/node_modules"
  rm -rf "$link"
  ln -s "$SDK" "$link"
}

setup() {
  need_node
  # One set-up at a time (a build and the end-to-end test may start together).
  mkdir -p "$ROOT/target"
  exec 9>"$ROOT/target/sdk-js-setup.lock"
  command -v flock >/dev/null && flock 9
  npm_ci "$SDK"
  local p
  while IFS= read -r p; do link_sdk "$p"; done < <(js_plugins)
  exec 9>&-
}

build() {
  if [ $# -eq 1 ] || [ $# -gt 3 ]; then
    echo "usage: sdk-js/dev.sh build [SRC_DIR OUT.wasm [WORLD]]" >&2
    exit 2
  fi
  local src=${1:-$ROOT/plugins/js-status-check}
  local out=${2:-$ROOT/target/wasm32-wasip2/release/js_status_check.wasm}
  local world=${3:-check}
  setup
  say "building $src into $out (world $world)"
  node "$SDK/build/componentize.mjs" "$src" "$out" "$world"
}

test_all() {
  setup
  local files=() p f
  while IFS= read -r f; do files+=("$f"); done < <(find "$SDK/test" -name '*.test.js' | sort)
  while IFS= read -r p; do
    while IFS= read -r f; do files+=("$f"); done < <(find "$p" -path "$p/node_modules" -prune -o -name '*.test.js' -print | sort)
  done < <(js_plugins)
  say "node --test: ${#files[@]} test files"
  node --test "${files[@]}"
}

case "${1:-}" in
  setup) setup ;;
  build) shift; build "$@" ;;
  test) test_all ;;
  *) sed -n '2,10p' "$0"; exit 2 ;;
esac
