#!/usr/bin/env bash
# Runs every test of the project: the Rust workspace (unit, property, end-to-end over loopback,
# CLI) and the Kotlin bindings on the JVM against the real native library, after regenerating
# the Kotlin and Swift bindings; the staff console in headless Chromium. Installs what it needs
# when missing (kotlinc, JNA, chromium, playwright-core).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== Rust: format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== Rust: workspace tests"
cargo test --workspace --quiet

if [ -x scripts/test-bindings.sh ]; then
  echo "== Bindings: regenerate, compile and run Kotlin tests on the JVM"
  scripts/test-bindings.sh
fi

echo "== Browser: the registry console in headless Chromium"
scripts/browser-test.sh
