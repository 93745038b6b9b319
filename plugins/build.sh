#!/usr/bin/env bash
# Builds every plugin from source: the Rust examples and hostile fixtures, the JavaScript
# twin (componentize-js) and the Python twin (componentize-py).
#
#   plugins/build.sh [OUT_DIR]        (default: <repo>/target/plugins)
#
# Output: OUT_DIR/NAME.wasm + OUT_DIR/NAME.toml for every example, and the hostile
# fixtures under OUT_DIR/hostile/. Each file is written to a temporary name and renamed, so a
# host watching OUT_DIR never sees half a component.
#
# It installs what it needs and fails if it cannot; no language is ever skipped:
# - the Rust target wasm32-wasip2 (rustup);
# - the JavaScript toolchain with `npm ci` from the committed package-lock.json (Node.js 18
#   or later and npm must be on PATH);
# - componentize-py, pinned in python/lifecycle-segments/requirements.txt, in a virtualenv
#   at <repo>/target/plugin-venv (Python 3.10 or later with venv must be on PATH).
# It checks for those tools and their versions first, and stops with one line naming what
# is missing.
# Re-runs are quick: cargo is incremental, npm ci and pip run only when their lock changed,
# and a JS or Python component is rebuilt only when its sources, lock or the WIT changed.
set -euo pipefail

PLUGINS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$PLUGINS")"
OUT="${1:-$REPO/target/plugins}"
mkdir -p "$OUT/hostile"
OUT="$(cd "$OUT" && pwd)"
BUILD="$REPO/target/plugins-build"
VENV="$REPO/target/plugin-venv"
START=$SECONDS

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'plugins/build.sh: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required ($2)"; }
# need_version TOOL MIN FOUND WHAT: FOUND (like 18.19.0) must be at least MIN (like 18.0).
need_version() {
  local major minor want_major want_minor
  IFS=. read -r major minor _ <<< "$3"
  IFS=. read -r want_major want_minor <<< "$2"
  if [ -z "$major" ] || [ "$major" -lt "$want_major" ] \
    || { [ "$major" -eq "$want_major" ] && [ "${minor:-0}" -lt "${want_minor:-0}" ]; }; then
    die "$1 $2 or later is required, found ${3:-an unknown version} ($4)"
  fi
}

# Everything the three languages need, checked before any work starts, so a fresh machine
# learns in one line what is missing instead of after the Rust build.
need cargo "install Rust from https://rustup.rs"
need node "Node.js 18 or later, with npm: https://nodejs.org"
need_version "Node.js" 18.0 "$(node --version 2>/dev/null | sed 's/^v//')" "https://nodejs.org"
need npm "npm comes with Node.js 18 or later"
need python3 "Python 3.10 or later, with the venv module"
need_version "Python" 3.10 "$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" \
  "python3 on PATH"
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 \
  || die "Python's venv module is required (on Debian/Ubuntu: apt-get install python3-venv)"

# Copies $1 to $2 through a temporary file in the destination folder, then renames it.
publish() {
  local tmp
  tmp="$(dirname "$2")/.$(basename "$2").tmp.$$"
  cp "$1" "$tmp"
  mv -f "$tmp" "$2"
}

# A fingerprint of the given files and of the WIT package (contents and names).
fingerprint() {
  find "$@" "$REPO/wit" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum \
    | sha256sum | cut -d' ' -f1
}

# ---------------------------------------------------------------------------- Rust
step "Rust: examples and hostile fixtures (wasm32-wasip2, release)"
need cargo "install Rust from https://rustup.rs"
if ! rustc --print target-libdir --target wasm32-wasip2 >/dev/null 2>&1 \
  || [ ! -d "$(rustc --print target-libdir --target wasm32-wasip2)" ]; then
  need rustup "to add the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi
CARGO_TARGET_DIR="$BUILD" cargo build --release --locked --target wasm32-wasip2 \
  --manifest-path "$PLUGINS/Cargo.toml" --workspace
RUST_OUT="$BUILD/wasm32-wasip2/release"

# Copies crate folder $1's component and its NAME.toml into folder $2.
publish_crate() {
  local dir="$1" dest="$2" name
  name="$(basename "$dir")"
  [ -f "$dir/$name.toml" ] || die "missing manifest $dir/$name.toml"
  [ -f "$RUST_OUT/${name//-/_}.wasm" ] || die "cargo did not produce ${name//-/_}.wasm"
  publish "$dir/$name.toml" "$dest/$name.toml"
  publish "$RUST_OUT/${name//-/_}.wasm" "$dest/$name.wasm"
}
for dir in "$PLUGINS"/examples/*/; do publish_crate "${dir%/}" "$OUT"; done
for dir in "$PLUGINS"/hostile/*/; do publish_crate "${dir%/}" "$OUT/hostile"; done

# ---------------------------------------------------------------------------- JavaScript
step "JavaScript: volume-pricing-js (componentize-js)"
need node "Node.js 18 or later"
need npm "comes with Node.js"
JS="$PLUGINS/js/volume-pricing"
LOCK_SUM="$(sha256sum "$JS/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$JS/node_modules/.hephaestus-lock" 2>/dev/null || true)" != "$LOCK_SUM" ]; then
  (cd "$JS" && npm ci --no-audit --no-fund)
  echo "$LOCK_SUM" > "$JS/node_modules/.hephaestus-lock"
else
  echo "node_modules matches package-lock.json; npm ci skipped" >&2
fi
mkdir -p "$BUILD/js"
JS_SUM="$(fingerprint "$JS/volume-pricing.js" "$JS/build.mjs" "$JS/package-lock.json")"
if [ "$(cat "$BUILD/js/volume-pricing-js.sum" 2>/dev/null || true)" != "$JS_SUM" ]; then
  node "$JS/build.mjs" "$BUILD/js/volume-pricing-js.wasm"
  echo "$JS_SUM" > "$BUILD/js/volume-pricing-js.sum"
else
  echo "sources unchanged; componentize skipped" >&2
fi
publish "$JS/volume-pricing-js.toml" "$OUT/volume-pricing-js.toml"
publish "$BUILD/js/volume-pricing-js.wasm" "$OUT/volume-pricing-js.wasm"

# ---------------------------------------------------------------------------- Python
step "Python: lifecycle-segments-py (componentize-py)"
need python3 "Python 3.10 or later, with the venv module"
PY="$PLUGINS/python/lifecycle-segments"
PIN="$(sed -n 's/^componentize-py==\([0-9.]*\).*/\1/p' "$PY/requirements.txt")"
[ -n "$PIN" ] || die "requirements.txt must pin componentize-py==X.Y.Z"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" || die "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
fi
if [ "$("$VENV/bin/componentize-py" --version 2>/dev/null || true)" != "componentize-py $PIN" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$PY/requirements.txt"
else
  echo "componentize-py $PIN already installed; pip skipped" >&2
fi
mkdir -p "$BUILD/python"
PY_SUM="$(fingerprint "$PY/app.py" "$PY/requirements.txt")"
if [ "$(cat "$BUILD/python/lifecycle-segments-py.sum" 2>/dev/null || true)" != "$PY_SUM" ]; then
  (cd "$PY" && PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/componentize-py" -d "$REPO/wit" -w segmentation \
    componentize app -o "$BUILD/python/lifecycle-segments-py.wasm")
  echo "$PY_SUM" > "$BUILD/python/lifecycle-segments-py.sum"
else
  echo "sources unchanged; componentize skipped" >&2
fi
publish "$PY/lifecycle-segments-py.toml" "$OUT/lifecycle-segments-py.toml"
publish "$BUILD/python/lifecycle-segments-py.wasm" "$OUT/lifecycle-segments-py.wasm"

# ---------------------------------------------------------------------------- Summary
step "Built in $((SECONDS - START)) s into $OUT"
(cd "$OUT" && for f in *.wasm hostile/*.wasm; do
  printf '%10s  %s\n' "$(numfmt --to=iec --suffix=B "$(stat -c %s "$f")")" "$f"
done)
