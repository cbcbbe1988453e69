#!/usr/bin/env bash
# integ_load.sh — edgellmd under load, with figures: wrk against /health and against cache
# hits (requests/s, latency, no errors); 40 concurrent streaming clients against a small
# model (every stream complete and well-formed); 200 streaming requests of which a third
# hang up at random moments (while queued, or after some frames): nothing hangs, every
# request is accounted for (served, or cancelled and counted), the queue drains, and the
# daemon's resident memory comes back to its post-warm-up baseline (VmRSS sampled before,
# during and after). Longer runs of the same mix: tests/soak.sh (make soak).
#
# wrk comes from the `wrk` package (tools/deps.sh); without it the wrk checks fail and the
# rest runs.
. "$(dirname "$0")/daemon_lib.sh"

[ -x "$EDGELLMD" ] || { echo "FAIL: $EDGELLMD not built"; exit 1; }
SMALL=${LOAD_MODEL:-$SHARED/models/qwen2-gpt2-e128.f16.gguf}
[ -f "$SMALL" ] || { echo "FAIL: model $SMALL missing (SHARED=$SHARED)"; exit 1; }
WRK_SECONDS=${WRK_SECONDS:-5}
# RSS may end this much above its baseline: what glibc keeps in its per-thread arenas and
# SQLite in its page cache after a burst (measured: well under 1 MiB after 200 streams;
# a leak of one request's buffers, 64 KiB of ring each, would pass 4 MiB within a run).
RSS_SLACK_KB=${RSS_SLACK_KB:-4096}

start_daemon load --model "$SMALL" --queue 64 --ctx 512 --max-conns 512 || exit 1
echo "info: machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- wrk: /health and cache hits --------------------------------------------------------------------------
if have_wrk; then
    wrk_run health "$WRK_SECONDS" "$URL/health"
    check "wrk /health: thousands of requests, all 200, no socket errors" \
        [ "${WRK_REQS:-0}" -gt 1000 -a -z "$WRK_NON2XX" -a -z "$WRK_SOCKERR" ]
    CACHED='{"prompt":"a cached answer for wrk","max_tokens":16,"temperature":0}'
    c "$URL/v1/completions" -d "$CACHED" >/dev/null
    for _ in $(seq 1 50); do [ "$(metric edgellm_cache_stores_total)" -ge 1 ] && break; sleep 0.05; done
    printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' "'$CACHED'" > "$TMP/post.lua"
    HITS0=$(metric edgellm_cache_hits_total)
    wrk_run cache_hits "$WRK_SECONDS" -s "$TMP/post.lua" "$URL/v1/completions"
    HITS1=$(metric edgellm_cache_hits_total)
    check "wrk cache hits: thousands of requests, all 200, no socket errors" \
        [ "${WRK_REQS:-0}" -gt 1000 -a -z "$WRK_NON2XX" -a -z "$WRK_SOCKERR" ]
    # wrk counts the replies it completed; a connection cut at the end may have been answered too
    check "... every one answered from the cache (hits counted: $((HITS1 - HITS0)))" \
        [ "$((HITS1 - HITS0))" -ge "${WRK_REQS:-1}" -a "$((HITS1 - HITS0))" -le $((WRK_REQS + 64)) ]
else
    fail "wrk is not installed (tools/deps.sh installs it): the wrk checks did not run"
fi

# ---- 40 concurrent streaming clients ---------------------------------------------------------------------
T0=$(date +%s%N)
CLIENTS=()
for i in $(seq 1 40); do
    curl -sS -m 300 -N -o "$TMP/s40_$i" -w '%{http_code}\n' "$URL/v1/chat/completions" \
        -d '{"messages":[{"role":"user","content":"client '"$i"'"}],"max_tokens":32,"stream":true,"stream_options":{"include_usage":true}}' \
        > "$TMP/s40_code$i" &
    CLIENTS+=($!)
done
wait "${CLIENTS[@]}"
T1=$(date +%s%N)
OK=0
for i in $(seq 1 40); do
    [ "$(cat "$TMP/s40_code$i")" = 200 ] && sse_ok "$TMP/s40_$i" usage 2>/dev/null && OK=$((OK + 1))
done
echo "info: 40 concurrent streaming clients: $OK complete well-formed streams in $(((T1 - T0) / 1000000)) ms"
check "40 concurrent streams: all 40 complete, well-formed, with usage" [ "$OK" = 40 ]

# ---- 200 streams, a third of the clients hang up at random ------------------------------------------------
# warm-up: the same mix once, so thread arenas, the page cache of the database and the
# tokenizer's caches are as big as the run will make them
python3 "$REPO/tests/storm.py" "$PORT" 60 warm-up > /dev/null
wait_idle
sleep 1
RSS_BASE=$(rss_kb "$PID")
CANCEL0=$(metric edgellm_cancellations_total)
SERVED0=$(all_answers)
peak_rss_start "$PID"
T0=$(date +%s%N)
timeout 600 python3 "$REPO/tests/storm.py" "$PORT" 200 run > "$TMP/storm"
STORM_RC=$?
T1=$(date +%s%N)
peak_rss_stop
read -r SERVED CANCELLED ERRORS WHAT < "$TMP/storm"
check "200 streams with hang-ups: the clients finished (nothing hung)" [ "$STORM_RC" = 0 ]
check "... the queue drained and the worker is idle" wait_idle
sleep 1
RSS_END=$(rss_kb "$PID")
CANCEL1=$(metric edgellm_cancellations_total)
SERVED1=$(all_answers)
echo "info: 200 streams in $(((T1 - T0) / 1000000)) ms: $SERVED served, $CANCELLED clients hung up, $ERRORS errors ${WHAT:-}"
echo "info: the daemon counted $((SERVED1 - SERVED0)) answers and $((CANCEL1 - CANCEL0)) cancellations"
echo "info: VmRSS: baseline ${RSS_BASE} kB after warm-up, peak ${RSS_PEAK} kB, final ${RSS_END} kB ($((RSS_END - RSS_BASE)) kB over the baseline)"
check "... no client saw an error" [ "${ERRORS:-1}" = 0 ]
check "... 133 served with complete streams, 67 hung up" [ "$SERVED" = 133 -a "$CANCELLED" = 67 ]
# a hang-up after the last frame went out is not a cancellation, so the daemon's counts can
# differ from the clients' by those: answers + cancellations account for every request
check "... every request accounted for by the daemon (answers + cancellations = 200)" \
    [ $((SERVED1 - SERVED0 + CANCEL1 - CANCEL0)) = 200 ]
check "... /v1/status: nothing waiting, nothing in flight" \
    bash -c "curl -s -m 10 '$URL/v1/status' | python3 -c \"import json,sys; j=json.load(sys.stdin); sys.exit(not (j['queue']['depth'] == 0 and j['in_flight'] is None))\""
check_rss "... RSS back within ${RSS_SLACK_KB} kB of the baseline" "$RSS_END" $((RSS_BASE + RSS_SLACK_KB))
check "the daemon still answers: /health 200" [ "$(status_of "$URL/health")" = 200 ]
check "SIGTERM: exits 0" stop_daemon TERM

finish
