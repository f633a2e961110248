#!/usr/bin/env bash
# Browser tests of the registry console: a real followup-server on 127.0.0.1, the `followup`
# CLI as the device, headless Debian Chromium driven by playwright-core. Installs Chromium
# (apt) and playwright-core (npm, into tests/browser/node_modules) when missing. Screenshots of
# the main pages go to target/browser-screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "== installing playwright-core"
  (cd tests/browser && npm install --no-audit --no-fund --silent)
fi

cargo build --quiet -p followup-server -p followup-cli
WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/rules.json" <<'JSON'
{"version":1,"title":"Clinic participation","rules":[
 {"id":"declined","kind":"declined","list":"not_participating","text":"The clinic declined the invitation."},
 {"id":"no-response","kind":"no_device_after_days","days":0,"list":"not_participating",
  "text":"Invited and no device enrolled (test threshold: 0 days)."},
 {"id":"good-standing","kind":"good_standing","list":"good_standing","text":"At least one enrolled device."}]}
JSON
FOLLOWUP_PARTICIPATION_RULES="$WORK/rules.json" RUST_LOG=warn \
  "$TARGET/debug/followup-server" --listen "127.0.0.1:$PORT" --data-dir "$WORK/registry" \
  > "$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  sleep 0.1
done
OUT=$("$TARGET/debug/followup" server add-staff --data "$WORK/registry" --email admin@registry.example --role admin)
PASSWORD=$(echo "$OUT" | sed -n 's/^password[^:]*: //p')

CONSOLE_URL="http://127.0.0.1:$PORT" ADMIN_EMAIL=admin@registry.example ADMIN_PASSWORD="$PASSWORD" \
FOLLOWUP_BIN="$TARGET/debug/followup" REGISTRY_DATA="$WORK/registry" \
SCREENSHOTS="$TARGET/browser-screenshots" \
  timeout 180 node tests/browser/console.test.mjs
