#!/usr/bin/env bash
# soak.sh — edgellmd for SOAK_SECONDS (default 600) under the mix of integ_load.sh and
# integ_abuse.sh, round after round: 200 streaming requests of which a third hang up
# (tests/storm.py), wrk against /health and against cache hits, and hostile requests (bad
# JSON, bodies over the limit, out-of-range fields and token ids). After each round the queue
# must drain; at the end every request is accounted for, no client saw an error, and the
# resident memory is within SOAK_RSS_SLACK_KB (default 8192) of where it was after the first
# round: a leak shows as growth round after round. Prints the figures: rounds, requests
# served, cancellations, errors, wrk totals, RSS after each round, peak and final.
#
#   make soak SOAK_SECONDS=3600        (or: SOAK_SECONDS=3600 bash tests/soak.sh)
# EDGELLM_BUILD, SHARED as for the integration scripts; SOAK_MODEL picks the model.
. "$(dirname "$0")/daemon_lib.sh"

[ -x "$EDGELLMD" ] || { echo "FAIL: $EDGELLMD not built"; exit 1; }
SOAK_SECONDS=${SOAK_SECONDS:-600}
SLACK=${SOAK_RSS_SLACK_KB:-8192}
SMALL=${SOAK_MODEL:-$SHARED/models/qwen2-gpt2-e128.f16.gguf}
[ -f "$SMALL" ] || { echo "FAIL: model $SMALL missing (SHARED=$SHARED)"; exit 1; }

start_daemon soak --model "$SMALL" --queue 64 --ctx 512 --max-conns 512 --body-limit 65536 || exit 1
echo "info: soak for $SOAK_SECONDS s on $(nproc) cores (load average $(cut -d' ' -f1-3 /proc/loadavg)), model $(basename "$SMALL")"
WRK=false
have_wrk && WRK=true || fail "wrk is not installed (tools/deps.sh installs it): no wrk traffic in the soak"
CACHED='{"prompt":"a cached answer for the soak","max_tokens":16,"temperature":0}'
printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' "'$CACHED'" > "$TMP/post.lua"
head -c 70000 /dev/zero | tr '\0' x > "$TMP/big"

# hostile: one of each kind of bad request; every one must be a 4xx
hostile() {
    local bad=0 code body
    for body in '{"messages":' '{"prompt":"x","max_tokens":1e300}' '{"prompt":"x","top_p":7}' '[[[[[[[[]]]]]]]]' \
                "@$TMP/big"; do
        code=$(curl -s -m 30 -o /dev/null -w '%{http_code}' "$URL/v1/completions" --data-binary "$body")
        case $code in 4??) ;; *) bad=$((bad + 1)) ;; esac
    done
    code=$(curl -s -m 30 -o /dev/null -w '%{http_code}' "$URL/detokenize" -d '{"tokens":[99999999,-1]}')
    case $code in 4??) ;; *) bad=$((bad + 1)) ;; esac
    return $bad
}

START=$(date +%s)
ROUND=0; SERVED=0; CANCELLED=0; ERRORS=0; HOSTILE_BAD=0; WRK_TOTAL=0; WRK_BAD=0; DRAIN_FAIL=0
PEAK=0; RSS_FIRST=0; RSS_TRACE=""
ANSWERS0=$(all_answers); CANCEL0=$(metric edgellm_cancellations_total)
while [ $(($(date +%s) - START)) -lt "$SOAK_SECONDS" ]; do
    ROUND=$((ROUND + 1))
    peak_rss_start "$PID"
    python3 "$REPO/tests/storm.py" "$PORT" 200 "round$ROUND" > "$TMP/storm" &
    STORM=$!
    if $WRK; then
        wrk_run "health" 3 "$URL/health" > /dev/null
        WRK_TOTAL=$((WRK_TOTAL + ${WRK_REQS:-0})); [ -z "$WRK_NON2XX$WRK_SOCKERR" ] || WRK_BAD=$((WRK_BAD + 1))
        wrk_run "cache" 3 -s "$TMP/post.lua" "$URL/v1/completions" > /dev/null
        WRK_TOTAL=$((WRK_TOTAL + ${WRK_REQS:-0})); [ -z "$WRK_NON2XX$WRK_SOCKERR" ] || WRK_BAD=$((WRK_BAD + 1))
    fi
    hostile || HOSTILE_BAD=$((HOSTILE_BAD + 1))
    wait "$STORM"
    read -r s k e _ < "$TMP/storm"
    SERVED=$((SERVED + ${s:-0})); CANCELLED=$((CANCELLED + ${k:-0})); ERRORS=$((ERRORS + ${e:-200}))
    wait_idle || DRAIN_FAIL=$((DRAIN_FAIL + 1))
    peak_rss_stop; [ "$RSS_PEAK" -gt "$PEAK" ] && PEAK=$RSS_PEAK
    R=$(rss_kb "$PID")
    [ "$ROUND" = 1 ] && RSS_FIRST=$R
    RSS_TRACE+="$R "
    echo "info: round $ROUND at $(($(date +%s) - START)) s: served ${s:-?}, hung up ${k:-?}, errors ${e:-?}; VmRSS $R kB"
done
sleep 1
RSS_END=$(rss_kb "$PID")
ANSWERED=$(($(all_answers) - ANSWERS0)); COUNTED_CANCEL=$(($(metric edgellm_cancellations_total) - CANCEL0))
echo "info: soak: $ROUND rounds in $(($(date +%s) - START)) s; storm requests $((ROUND * 200)): $SERVED served," \
     "$CANCELLED hung up, $ERRORS errors; the daemon answered $ANSWERED (wrk's cache hits included) and counted" \
     "$COUNTED_CANCEL cancellations; wrk $WRK_TOTAL requests"
echo "info: VmRSS after each round (kB): $RSS_TRACE"
echo "info: VmRSS: after round 1 $RSS_FIRST kB, peak $PEAK kB, final $RSS_END kB"
check "soak: at least one round" [ "$ROUND" -ge 1 ]
check "... no storm client saw an error" [ "$ERRORS" = 0 ]
check "... the queue drained after every round" [ "$DRAIN_FAIL" = 0 ]
check "... every hostile request got a 4xx" [ "$HOSTILE_BAD" = 0 ]
check "... wrk: no errors" [ "$WRK_BAD" = 0 ]
check "... every storm request accounted for (answers + cancellations >= storm requests)" \
    [ $((ANSWERED + COUNTED_CANCEL)) -ge $((ROUND * 200)) ]
check_rss "... RSS within $SLACK kB of round 1" "$RSS_END" $((RSS_FIRST + SLACK))
check "... /health 200" [ "$(status_of "$URL/health")" = 200 ]
check "SIGTERM: exits 0" stop_daemon TERM

finish
