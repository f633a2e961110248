#!/usr/bin/env bash
# Compiles the Kotlin bindings, the JVM-compatible idiomatic layer and the JVM tests with kotlinc
# (warnings are errors) and runs the tests on the JVM against the host build of the native
# library through JNA. The scenario tests start target/debug/followup-server (built here) on
# 127.0.0.1 and always stop it.
#
#   android/jvm-test/run.sh [test-name-substring ...]
#
# Installs what is missing: the Kotlin compiler from the npm package `kotlin-compiler` (pinned,
# into ${FOLLOWUP_CACHE:-~/.cache/followup}; it also ships kotlinx-coroutines and kotlin-test) and
# JNA from Debian's libjna-java. Expects the native library and freshly generated bindings from
# scripts/bindings-gen.sh (scripts/test-bindings.sh runs both); run alone, it calls it first.
set -euo pipefail

KOTLIN_VERSION=2.2.21
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${FOLLOWUP_CACHE:-$HOME/.cache/followup}"
KOTLIN_HOME="$CACHE/kotlin-$KOTLIN_VERSION/node_modules/kotlin-compiler"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="$ROOT/android/jvm-test/out"

# --- toolchain -------------------------------------------------------------------------------
command -v java >/dev/null || { echo "error: java (JDK 17+) is required: apt-get install -y openjdk-17-jdk-headless" >&2; exit 1; }

if [[ ! -x "$KOTLIN_HOME/bin/kotlinc" ]]; then
  command -v npm >/dev/null || { echo "error: npm is required to install kotlinc (apt-get install -y npm)" >&2; exit 1; }
  echo "-- installing kotlin-compiler@$KOTLIN_VERSION from npm into $CACHE"
  mkdir -p "$CACHE/kotlin-$KOTLIN_VERSION"
  npm install --prefix "$CACHE/kotlin-$KOTLIN_VERSION" --no-save --no-audit --no-fund --loglevel=error \
    "kotlin-compiler@$KOTLIN_VERSION" >/dev/null
fi
KLIB="$KOTLIN_HOME/lib"
for jar in kotlin-stdlib.jar kotlinx-coroutines-core-jvm.jar kotlin-test.jar; do
  [[ -f "$KLIB/$jar" ]] || { echo "error: $KLIB/$jar missing from the kotlin-compiler package" >&2; exit 1; }
done

JNA_JAR="${JNA_JAR:-/usr/share/java/jna.jar}"
if [[ ! -f "$JNA_JAR" ]]; then
  echo "-- installing JNA (Debian libjna-java)"
  SUDO=""; [[ "$(id -u)" == 0 ]] || SUDO="sudo"
  if ! $SUDO apt-get install -y -qq libjna-java >/dev/null 2>&1; then
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq libjna-java >/dev/null
  fi
fi
[[ -f "$JNA_JAR" ]] || { echo "error: JNA not found at $JNA_JAR" >&2; exit 1; }

# --- native library + generated bindings ----------------------------------------------------
GEN="$ROOT/build/bindings/kotlin/org/followup/ffi/followup_ffi.kt"
if [[ ! -f "$GEN" || "${FOLLOWUP_SKIP_GEN:-0}" != 1 ]]; then
  "$ROOT/scripts/bindings-gen.sh" --check
fi
LIBDIR="$TARGET_DIR/debug"
# The scenario tests start a real registry server on 127.0.0.1 as a subprocess.
echo "-- cargo build -p followup-server (host, debug)"
(cd "$ROOT" && cargo build --quiet -p followup-server --bin followup-server)
SERVER_BIN="$TARGET_DIR/debug/followup-server"

# --- compile (cached on a hash of the inputs) -----------------------------------------------
SOURCES=("$GEN")
while IFS= read -r f; do SOURCES+=("$f"); done < <(find "$ROOT/android/src/main/kotlin/org/followup" -maxdepth 1 -name '*.kt' | sort)
while IFS= read -r f; do SOURCES+=("$f"); done < <(find "$ROOT/android/src/jvmTest/kotlin" -name '*.kt' | sort)
CP="$KLIB/kotlinx-coroutines-core-jvm.jar:$KLIB/kotlin-test.jar:$JNA_JAR"
KOTLINC_FLAGS=(-Werror -jvm-target 17 -no-reflect)
stamp="$( (echo "$KOTLIN_VERSION ${KOTLINC_FLAGS[*]}"; cat "${SOURCES[@]}") | sha256sum | cut -d' ' -f1)"
if [[ -f "$OUT/stamp" && "$(cat "$OUT/stamp")" == "$stamp" ]]; then
  echo "-- kotlinc: sources unchanged, reusing $OUT/classes"
else
  echo "-- kotlinc ${KOTLINC_FLAGS[*]} (${#SOURCES[@]} files; ~30 s)"
  rm -rf "$OUT"; mkdir -p "$OUT"
  JAVA_OPTS="${JAVA_OPTS:--Xss4m}" "$KOTLIN_HOME/bin/kotlinc" "${KOTLINC_FLAGS[@]}" -cp "$CP" -d "$OUT/classes" "${SOURCES[@]}"
  echo "$stamp" > "$OUT/stamp"
fi

# --- run -------------------------------------------------------------------------------------
echo "-- java org.followup.test.TestRunnerKt (jna.library.path=$LIBDIR)"
exec java -Djna.library.path="$LIBDIR" -Dfollowup.server="$SERVER_BIN" \
  -cp "$OUT/classes:$KLIB/kotlin-stdlib.jar:$CP" org.followup.test.TestRunnerKt "$@"
