#!/usr/bin/env bash
# Builds the host native library and generates the Kotlin and Swift bindings from it (uniffi
# library mode), into build/bindings/. Then, with
#   --check   (default) fails if the committed copies differ from what was just generated;
#   --update  refreshes the committed copies:
#               android/src/main/kotlin/org/followup/ffi/followup_ffi.kt
#               ios/Sources/FollowupFFI/FollowupFFI.swift
#               ios/Generated/followup_ffiFFI.h, ios/Generated/followup_ffiFFI.modulemap
# Generation runs with --no-format so output never depends on whether ktlint/swift-format happen
# to be installed.
set -euo pipefail

mode="${1:---check}"
case "$mode" in --check|--update) ;; *) echo "usage: $0 [--check|--update]" >&2; exit 2 ;; esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$(uname -s)" in
  Darwin) LIB="$TARGET_DIR/debug/libfollowup_ffi.dylib" ;;
  *) LIB="$TARGET_DIR/debug/libfollowup_ffi.so" ;;
esac
OUT="$ROOT/build/bindings"

echo "-- cargo build -p followup-ffi (host, debug)"
cargo build --quiet -p followup-ffi --lib --bin uniffi-bindgen
BINDGEN="$TARGET_DIR/debug/uniffi-bindgen"

rm -rf "$OUT"
mkdir -p "$OUT/kotlin" "$OUT/swift"
echo "-- uniffi-bindgen generate --library $(basename "$LIB") (kotlin, swift)"
"$BINDGEN" generate --no-format --library "$LIB" --language kotlin --out-dir "$OUT/kotlin" >/dev/null
"$BINDGEN" generate --no-format --library "$LIB" --language swift --out-dir "$OUT/swift" >/dev/null

# generated -> committed
pairs=(
  "$OUT/kotlin/org/followup/ffi/followup_ffi.kt:android/src/main/kotlin/org/followup/ffi/followup_ffi.kt"
  "$OUT/swift/FollowupFFI.swift:ios/Sources/FollowupFFI/FollowupFFI.swift"
  "$OUT/swift/followup_ffiFFI.h:ios/Generated/followup_ffiFFI.h"
  "$OUT/swift/followup_ffiFFI.modulemap:ios/Generated/followup_ffiFFI.modulemap"
)

stale=0
for pair in "${pairs[@]}"; do
  gen="${pair%%:*}"; committed="${pair#*:}"
  [[ -f "$gen" ]] || { echo "error: uniffi-bindgen did not produce $gen" >&2; exit 1; }
  if [[ "$mode" == --update ]]; then
    mkdir -p "$(dirname "$committed")"
    cp "$gen" "$committed"
    echo "   updated $committed"
  elif ! cmp -s "$gen" "$committed"; then
    stale=1
    echo "STALE: $committed differs from the bindings generated from the current Rust code:" >&2
    diff -u "$committed" "$gen" 2>&1 | head -40 >&2 || true
  else
    echo "   current $committed"
  fi
done

if [[ "$stale" == 1 ]]; then
  echo >&2
  echo "The committed Kotlin/Swift bindings are out of date with bindings/src." >&2
  echo "Refresh them with:  scripts/bindings-gen.sh --update   and commit the result." >&2
  exit 1
fi
