#!/usr/bin/env bash
# Builds ios/build/followup_ffiFFI.xcframework on macOS (Xcode 15+, rustup):
#   - libfollowup_ffi.a for aarch64-apple-ios (device),
#   - aarch64-apple-ios-sim + x86_64-apple-ios lipo'd into one simulator slice,
#   - aarch64-apple-darwin + x86_64-apple-darwin lipo'd into one macOS slice (for `swift test`),
# each with the C header and module map uniffi generates (module followup_ffiFFI). It regenerates
# the Swift bindings from the same build and refreshes Sources/FollowupFFI/FollowupFFI.swift, so
# the package always matches the library inside the XCFramework.
#
#   ios/build-xcframework.sh [--debug]
set -euo pipefail

PROFILE=release
[[ "${1:-}" == --debug ]] && PROFILE=debug
CARGO_PROFILE_FLAG=(--release); [[ "$PROFILE" == debug ]] && CARGO_PROFILE_FLAG=()

[[ "$(uname -s)" == Darwin ]] || { echo "error: build-xcframework.sh needs macOS with Xcode" >&2; exit 1; }
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BUILD="$HERE/build"
XCF="$BUILD/followup_ffiFFI.xcframework"
export IPHONEOS_DEPLOYMENT_TARGET="${IPHONEOS_DEPLOYMENT_TARGET:-15.0}"
export MACOSX_DEPLOYMENT_TARGET="${MACOSX_DEPLOYMENT_TARGET:-12.0}"

TARGETS=(aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios aarch64-apple-darwin x86_64-apple-darwin)
echo "== rustup targets"
rustup target add "${TARGETS[@]}"

cd "$ROOT"
for t in "${TARGETS[@]}"; do
  echo "== cargo build --target $t ($PROFILE)"
  cargo build "${CARGO_PROFILE_FLAG[@]}" -p followup-ffi --lib --target "$t"
done

echo "== generate Swift bindings (library mode, from the host dylib)"
cargo build "${CARGO_PROFILE_FLAG[@]}" -p followup-ffi --lib --bin uniffi-bindgen
GEN="$BUILD/generated"
rm -rf "$GEN" && mkdir -p "$GEN"
"$TARGET_DIR/$PROFILE/uniffi-bindgen" generate --no-format \
  --library "$TARGET_DIR/$PROFILE/libfollowup_ffi.dylib" --language swift --out-dir "$GEN"
cp "$GEN/FollowupFFI.swift" "$HERE/Sources/FollowupFFI/FollowupFFI.swift"

HEADERS="$BUILD/headers"
rm -rf "$HEADERS" && mkdir -p "$HEADERS"
cp "$GEN/followup_ffiFFI.h" "$HEADERS/"
# An XCFramework's Headers dir needs the module map under the name module.modulemap.
cp "$GEN/followup_ffiFFI.modulemap" "$HEADERS/module.modulemap"

echo "== lipo simulator and macOS slices"
lib() { echo "$TARGET_DIR/$1/$PROFILE/libfollowup_ffi.a"; }
mkdir -p "$BUILD/ios-sim" "$BUILD/macos"
lipo -create "$(lib aarch64-apple-ios-sim)" "$(lib x86_64-apple-ios)" -output "$BUILD/ios-sim/libfollowup_ffi.a"
lipo -create "$(lib aarch64-apple-darwin)" "$(lib x86_64-apple-darwin)" -output "$BUILD/macos/libfollowup_ffi.a"

echo "== xcodebuild -create-xcframework"
rm -rf "$XCF"
xcodebuild -create-xcframework \
  -library "$(lib aarch64-apple-ios)" -headers "$HEADERS" \
  -library "$BUILD/ios-sim/libfollowup_ffi.a" -headers "$HEADERS" \
  -library "$BUILD/macos/libfollowup_ffi.a" -headers "$HEADERS" \
  -output "$XCF"

ls -l "$(lib aarch64-apple-ios)"
echo "built $XCF"
