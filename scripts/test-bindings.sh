#!/usr/bin/env bash
# The bindings part of the test command:
#   1. builds the host native library and regenerates the Kotlin and Swift bindings, failing if
#      the committed copies are stale;
#   2. compiles the Kotlin bindings + the JVM-compatible Kotlin layer + the Kotlin tests with
#      kotlinc -Werror and runs them on the JVM against the native library (installs kotlinc and
#      JNA when missing);
#   3. checks the Swift package is complete (and, on macOS with Xcode, builds the XCFramework
#      and runs `swift test`).
# Exits non-zero on the first failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
start=$SECONDS
section() { printf '\n==== %s ====\n' "$*"; }

section "bindings 1/3: native library + generated Kotlin/Swift bindings are current"
scripts/bindings-gen.sh --check

section "bindings 2/3: Kotlin bindings and layer on the JVM (kotlinc -Werror, JNA)"
log="$(mktemp)"; trap 'rm -f "$log"' EXIT
FOLLOWUP_SKIP_GEN=1 android/jvm-test/run.sh | tee "$log"
kotlin_passed="$(sed -n 's/^\([0-9][0-9]*\) passed, 0 failed$/\1/p' "$log" | tail -1)"
[[ -n "$kotlin_passed" ]] || { echo "error: the Kotlin runner printed no summary" >&2; exit 1; }

section "bindings 3/3: Swift package"
missing=0
for f in ios/Package.swift ios/build-xcframework.sh ios/Sources/FollowupFFI/FollowupFFI.swift \
         ios/Sources/Followup/KeychainKeyProvider.swift ios/Sources/Followup/Progress.swift \
         ios/Sources/Followup/Store.swift \
         ios/Tests/FollowupTests/FollowupTests.swift ios/Generated/followup_ffiFFI.h \
         ios/Generated/followup_ffiFFI.modulemap .github/workflows/ios.yml; do
  [[ -f "$f" ]] || { echo "missing: $f" >&2; missing=1; }
done
grep -q 'canImport(followup_ffiFFI)' ios/Sources/FollowupFFI/FollowupFFI.swift \
  || { echo "FollowupFFI.swift does not import the followup_ffiFFI module the XCFramework provides" >&2; missing=1; }
grep -q '^module followup_ffiFFI' ios/Generated/followup_ffiFFI.modulemap \
  || { echo "module map does not declare followup_ffiFFI" >&2; missing=1; }
grep -q 'followup_ffiFFI.xcframework' ios/Package.swift \
  || { echo "Package.swift does not point at build/followup_ffiFFI.xcframework" >&2; missing=1; }
[[ "$missing" == 0 ]] || exit 1
if [[ "$(uname -s)" == Darwin ]] && command -v xcodebuild >/dev/null && command -v swift >/dev/null; then
  ios/build-xcframework.sh --debug
  cargo build --quiet -p followup-server --bin followup-server
  (cd ios && FOLLOWUP_SERVER="${CARGO_TARGET_DIR:-$ROOT/target}/debug/followup-server" swift test)
else
  echo "Swift package complete; generated Swift is current. No Swift toolchain on $(uname -s):"
  echo "XCFramework build and XCTest run in .github/workflows/ios.yml (macOS)."
fi

# Kotlin tests + the two checks above (bindings current, Swift package complete).
printf '\nbindings checks took %ss\n' "$((SECONDS - start))"
echo "bindings: $((kotlin_passed + 2)) passed, 0 failed"
