#!/usr/bin/env bash
# integ_js.sh — clients we did not write: the official openai npm package (streamed and not)
# against a real edgellmd, and openapi.yaml validated as OpenAPI 3.1 with real responses
# checked against its schemas (tests/js/*.test.mjs, node's test runner). Installs the pinned
# npm packages into tests/js when node_modules is missing; skips, loudly, only without npm.
. "$(dirname "$0")/daemon_lib.sh"

if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    echo "SKIP: npm/node not installed: the openai client and OpenAPI checks did NOT run"
    exit 0
fi
[ -x "$EDGELLMD" ] || { echo "FAIL: $EDGELLMD not built"; exit 1; }
[ -f "$MODEL" ] || { echo "FAIL: model $MODEL missing (SHARED=$SHARED)"; exit 1; }
JS=$REPO/tests/js
if [ ! -d "$JS/node_modules" ]; then
    (cd "$JS" && npm ci --no-audit --no-fund >/dev/null 2>"$TMP/npm.log") || { cat "$TMP/npm.log"; echo "FAIL: npm ci"; exit 1; }
fi
start_daemon js --model "$MODEL" || exit 1
EDGELLM_URL=$URL node --test --test-reporter=tap "$JS"/*.test.mjs > "$TMP/tap" 2>&1
rc=$?
grep -E '^# Subtest: ' "$TMP/tap" >/dev/null
# one line per test from the TAP report
sed -n 's/^    \(not ok\|ok\) [0-9]* - \(.*\)/\1 \2/p; s/^\(not ok\|ok\) [0-9]* - \(.*\)/\1 \2/p' "$TMP/tap" |
while read -r status rest; do
    if [ "$status" = ok ]; then echo "PASS: js: $rest"; else echo "FAIL: js: ${rest#ok }"; fi
done
PASSED=$(sed -n 's/^# pass //p' "$TMP/tap")
FAILED=$(sed -n 's/^# fail //p' "$TMP/tap")
if [ "$rc" -ne 0 ]; then
    cat "$TMP/tap" | grep -v '^ *\(ok\|# Subtest\)' | head -60
    FAILED=${FAILED:-1}
    [ "$FAILED" -eq 0 ] && FAILED=1
fi
stop_daemon TERM
finish
