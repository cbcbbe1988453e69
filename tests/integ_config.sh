#!/usr/bin/env bash
# integ_config.sh — the configuration file end to end:
#   - edgellmd --check-config FILE: exit 0 and "OK" for a good file (the installed default
#     among them); exit 2 for a bad one, each problem explained: an unknown key (with the
#     nearest known one), a wrong type (expected and found), a value out of range (the range
#     and what the setting is for), a syntax error (the line), all problems of a file at once;
#   - SIGHUP reloads it: live settings (queue, max-tokens) change what /v1/status shows and
#     what the daemon does; a restart-only one (threads) is logged as such and kept; a broken
#     file leaves the running configuration in place.
. "$(dirname "$0")/daemon_lib.sh"

[ -x "$EDGELLMD" ] || { echo "FAIL: $EDGELLMD not built"; exit 1; }
[ -f "$MODEL" ] || { echo "FAIL: model $MODEL missing (SHARED=$SHARED)"; exit 1; }

# check_config NAME JSON WANT_STATUS GREP...: --check-config on a file holding JSON exits
# WANT_STATUS and its output (stdout and stderr) has every GREP pattern (fixed strings).
check_config() {
    local name=$1 json=$2 want=$3 got pattern ok=1; shift 3
    printf '%s' "$json" > "$TMP/$name.json"
    "$EDGELLMD" --check-config "$TMP/$name.json" > "$TMP/$name.out" 2>&1
    got=$?
    [ "$got" = "$want" ] || { ok=0; echo "    exit $got, wanted $want: $(head -c 300 "$TMP/$name.out")"; }
    for pattern in "$@"; do
        grep -qF -- "$pattern" "$TMP/$name.out" || { ok=0; echo "    no '$pattern' in: $(head -c 300 "$TMP/$name.out")"; }
    done
    [ $ok = 1 ]
}

# ---- --check-config ------------------------------------------------------------------------------
check "good file: exit 0, OK" check_config good '{"queue": 3, "max_tokens": 64, "model_keep_alive_s": 60}' 0 ': OK'
check "the installed default configuration is good" \
    bash -c "'$EDGELLMD' --check-config '$REPO/systemd/edgellmd.json' 2>/dev/null | grep -q ': OK'"
check "unknown key: exit 2, the nearest key suggested" \
    check_config typo '{"qeue": 3}' 2 'key "qeue" is not a setting; did you mean "queue"?' '1 problem'
check "a flag's spelling as a key: the JSON spelling suggested" \
    check_config dash '{"max-tokens": 3}' 2 'did you mean "max_tokens"?'
check "wrong type: what was expected and what was found" \
    check_config type '{"queue": [3]}' 2 'key "queue": expected a number, got an array'
check "bad range: the range and what the setting is for" \
    check_config range '{"port": 70000}' 2 'key "port": 70000 is outside [0, 65535] (TCP port'
check "every problem at once" \
    check_config many '{"qeue": 3, "port": true, "queue": -1, "threads": 2}' 2 \
    'did you mean "queue"' 'expected a number, got a boolean' '-1 is outside [0, 4096]' '3 problems'
check "syntax error: the line" check_config syntax "$(printf '{\n  "queue": 3\n  "port": 1\n}')" 2 'syntax error at line 3'
check "settings that cannot go together" check_config both '{"mlock": true, "no_shm": true}' 2 'cannot go with no-shm'
check "--check-config=FILE spelling" bash -c "'$EDGELLMD' --check-config='$TMP/good.json' | grep -q ': OK'"
check "an empty file: exit 2" check_config empty '' 2 'not a JSON object'
"$EDGELLMD" --check-config "$TMP/nope.json" > "$TMP/nope.out" 2>&1
check "a missing file: exit 2, naming it" bash -c "[ $? = 2 ] && grep -q 'nope.json: No such file' '$TMP/nope.out'"

# ---- SIGHUP ----------------------------------------------------------------------------------------------
CONF=$TMP/edgellmd.json
echo '{"queue": 16, "max_tokens": 64, "threads": 1}' > "$CONF"
start_daemon hup --model "$MODEL" --config "$CONF" || exit 1
status_json 200 "j['queue']['capacity'] == 16 and j['limits']['max_tokens'] == 64 and j['reloads'] == 0" \
    "$URL/v1/status" >/dev/null || fail "before the reload: /v1/status shows the file's queue and max_tokens"
REQ='{"prompt":"Once upon a time","temperature":0}'
status_of "$URL/v1/completions" -d "$REQ" >/dev/null
BEFORE=$(python3 -c "import json; print(json.load(open('$TMP/body'))['usage']['completion_tokens'])")
# burst N: N long completions at once; prints how many got 200 and how many 503 queue_full
burst() {
    local i
    for i in $(seq 1 "$1"); do
        c -o "$TMP/burst$i" -w '%{http_code}\n' "$URL/v1/completions" -d '{"prompt":"a","max_tokens":300}' &
    done > "$TMP/burst_codes"
    wait
    echo "$(grep -c 200 "$TMP/burst_codes") $(grep -c 503 "$TMP/burst_codes")"
}
check "queue 16: a burst of 4 is served whole" [ "$(burst 4)" = "4 0" ]

echo '{"queue": 1, "max_tokens": 5, "threads": 2}' > "$CONF"
kill -HUP "$PID"
for _ in $(seq 1 100); do grep -q 'reload done' "$LOG" && break; sleep 0.05; done
check "SIGHUP: the reload is logged setting by setting" \
    bash -c "grep -q 'reload: queue 16 -> 1\$' '$LOG' && grep -q 'reload: max-tokens 64 -> 5\$' '$LOG'"
check "... a restart-only setting is named and kept" grep -q 'reload: threads 1 -> 2 needs a restart: still 1' "$LOG"
check "... /v1/status shows the new queue and max_tokens" \
    status_json 200 "j['queue']['capacity'] == 1 and j['limits']['max_tokens'] == 5 and j['reloads'] == 1" "$URL/v1/status"
status_of "$URL/v1/completions" -d "$REQ" >/dev/null
check "... a request without max_tokens now stops at 5 (was $BEFORE)" \
    bash -c "[ '$BEFORE' -gt 5 ] && python3 -c \"import json,sys; j=json.load(open('$TMP/body')); sys.exit(not (j['usage']['completion_tokens'] == 5 and j['choices'][0]['finish_reason'] == 'length'))\""
read -r OK503 FULL503 <<< "$(burst 4)"
check "... and a burst of 4 meets a queue of 1: one runs, one waits, two are refused ($OK503 served)" \
    [ "$OK503 $FULL503" = "2 2" ]
check "... refused as queue_full" bash -c "[ \$(grep -l queue_full '$TMP'/burst? | wc -l) = 2 ]"

echo '{"queue": ' > "$CONF"
kill -HUP "$PID"
for _ in $(seq 1 100); do grep -q 'reload failed' "$LOG" && break; sleep 0.05; done
check "a broken file on SIGHUP: logged, the running configuration stays" \
    bash -c "grep -q 'reload failed, the running configuration stays: config file .*not a JSON object' '$LOG' &&
             [ \"\$(curl -s -m 10 '$URL/v1/status' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"queue\"][\"capacity\"])')\" = 1 ]"
check "... and it still serves" [ "$(status_of "$URL/v1/completions" -d "$REQ")" = 200 ]
check "SIGTERM: exits 0" stop_daemon TERM

finish
