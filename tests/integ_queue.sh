#!/usr/bin/env bash
# integ_queue.sh — edgellmd's scheduling end to end: the bounded queue (503 + Retry-After
# when full), queue positions in /v1/status, SSE keep-alive comments while waiting, deadline
# expiry, cancellation when a client hangs up (running: measured in tokens and ms; queued:
# leaves at once), 40 concurrent clients (served / 503 / lost / hung), and an idle daemon's
# CPU use. Prints PASS/FAIL per check and a summary; exits nonzero if any check failed.
. "$(dirname "$0")/daemon_lib.sh"

[ -x "$EDGELLMD" ] || { echo "FAIL: $EDGELLMD not built"; exit 1; }
[ -f "$MODEL" ] || { echo "FAIL: model $MODEL missing (SHARED=$SHARED)"; exit 1; }

# A request that keeps the worker busy for many seconds (greedy, so it is reproducible).
LONG='{"prompt":"a","max_tokens":8000,"temperature":0,"stream":true}'

start_daemon q --model "$MODEL" --queue 2 --keepalive-ms 200 --ctx 8192 || exit 1

# one token's time, measured, to judge "stops within one token"
c "$URL/v1/completions" -d '{"prompt":"a","max_tokens":64,"temperature":0}' >/dev/null
TPS=$(metric edgellm_decode_tokens_per_second)
echo "info: decode speed $TPS tokens/s"

CANCEL0=$(metric edgellm_cancellations_total)
# (curl itself in the background, not the c wrapper, so $! is the client to hang up)
curl -sS -m 120 -N "$URL/v1/completions" -o "$TMP/a" -d "$LONG" &
A=$!
for _ in $(seq 1 100); do [ "$(metric edgellm_worker_busy)" = 1 ] && break; sleep 0.05; done
curl -sS -m 120 -N "$URL/v1/completions" -D "$TMP/bh" -o "$TMP/b" -d '{"prompt":"b","max_tokens":4,"stream":true}' &
B=$!
for _ in $(seq 1 100); do [ "$(metric edgellm_queue_depth)" = 1 ] && break; sleep 0.05; done
curl -sS -m 1.5 -N "$URL/v1/completions" -D "$TMP/ch" -o "$TMP/c" -d '{"prompt":"c","max_tokens":4,"stream":true}' 2>/dev/null &
C=$!
for _ in $(seq 1 100); do [ "$(metric edgellm_queue_depth)" = 2 ] && break; sleep 0.05; done
check "two requests wait behind the running one" [ "$(metric edgellm_queue_depth)" = 2 ]
status_of "$URL/v1/status" >/dev/null
BID=$(sed -n 's/^[Xx]-[Rr]equest-[Ii]d: *\([^[:space:]]*\).*/\1/p' "$TMP/bh")
CID=$(sed -n 's/^[Xx]-[Rr]equest-[Ii]d: *\([^[:space:]]*\).*/\1/p' "$TMP/ch")
check "/v1/status shows queue positions by request id" \
    jq_py "[(w['id'], w['position']) for w in j['queue']['waiting']] == [('$BID', 1), ('$CID', 2)] and j['in_flight'] is not None"
check "queue full: 503" [ "$(status_of "$URL/v1/chat/completions" -d '{"messages":[{"role":"user","content":"x"}]}')" = 503 ]
check "... code queue_full" jq_py "j['error']['code'] == 'queue_full'"
check "... with Retry-After in seconds" grep -Eqi '^retry-after: [1-9][0-9]*' "$TMP/headers"
sleep 0.6
check "a waiting stream gets SSE keep-alive comments" grep -q '^: keep-alive' "$TMP/b"

# C's client gives up while it waits (curl -m 1.5): it leaves the queue at once
wait $C
for _ in $(seq 1 40); do [ "$(metric edgellm_queue_depth)" = 1 ] && break; sleep 0.05; done
check "a waiting client that hangs up leaves the queue" [ "$(metric edgellm_queue_depth)" = 1 ]
check "... and counts as a cancellation" [ "$(metric edgellm_cancellations_total)" = $((CANCEL0 + 1)) ]

# a request whose deadline passes while it waits gets 503 timeout
check "deadline passed in the queue: 503" \
    [ "$(status_of "$URL/v1/completions" -d '{"prompt":"d","max_tokens":4,"timeout":0.4}')" = 503 ]
check "... code timeout" jq_py "j['error']['code'] == 'timeout'"

# A's client hangs up mid-generation: the worker stops within one token
kill $A
wait $A 2>/dev/null
echo "info: the hung-up request had streamed $(grep -c '"text"' "$TMP/a") frames"
for _ in $(seq 1 100); do grep -q 'cancelled cmpl' "$LOG" && break; sleep 0.05; done
LINE=$(grep 'cancelled cmpl' "$LOG" | tail -1)
AFTER=$(echo "$LINE" | sed -n 's/.*: \([0-9]*\) more after the client left.*/\1/p')
LAG=$(echo "$LINE" | sed -n 's/.*stopped \([0-9.]*\) ms after it.*/\1/p')
TOKEN_MS=$(echo "$LINE" | sed -n 's/.*(\([0-9.]*\) ms per token).*/\1/p')
echo "info: after the hang-up the worker produced ${AFTER:-?} more tokens and stopped within ${LAG:-?} ms (mean token ${TOKEN_MS:-?} ms)"
# gen_run polls the flag once per token: the token being computed may finish, no other
check "running request: generation stops within one token of the hang-up" [ "${AFTER:-99}" -le 1 ]
check "... counts as a cancellation" [ "$(metric edgellm_cancellations_total)" = $((CANCEL0 + 2)) ]
wait $B
check "the worker then serves the next in line" sse_ok "$TMP/b"
for _ in $(seq 1 100); do [ "$(metric edgellm_worker_busy)" = 0 ] && break; sleep 0.05; done
check "and is free afterwards" [ "$(metric edgellm_worker_busy)" = 0 ]
stop_daemon INT

# ---- 40 concurrent clients against a queue of 16 -----------------------------------------------
start_daemon load --model "$MODEL" --queue 16 || exit 1
T0=$(date +%s.%N)
CLIENTS=()
for i in $(seq 1 40); do
    curl -s -m 120 -o /dev/null -D "$TMP/h$i" -w '%{http_code}\n' "$URL/v1/completions" \
        -d '{"prompt":"client '"$i"'","max_tokens":24}' > "$TMP/code$i" &
    CLIENTS+=($!)
done
wait "${CLIENTS[@]}"
T1=$(date +%s.%N)
SERVED=$(cat "$TMP"/code* | grep -c '^200')
REFUSED=$(cat "$TMP"/code* | grep -c '^503')
ANSWERED=$(cat "$TMP"/code* | grep -c '^[0-9]')
LOST=$((40 - SERVED - REFUSED))
echo "info: 40 clients, queue 16: $SERVED served, $REFUSED refused with 503, $LOST lost or hung, $(python3 -c "print(round($T1 - $T0, 2))") s"
check "40 clients: every one got 200 or 503 (none lost, none hung)" [ "$LOST" -eq 0 -a "$ANSWERED" -eq 40 ]
check "40 clients: at least queue + 1 were served" [ "$SERVED" -ge 17 ]
check "40 clients: every 503 carried Retry-After" \
    bash -c "for i in \$(seq 1 40); do grep -q '^503' '$TMP/code'\$i || continue; grep -qi '^retry-after: [1-9]' '$TMP/h'\$i || exit 1; done"
check "40 clients: the log has one line per request" [ "$(grep -c 'POST /v1/completions' "$LOG")" -eq 40 ]

# ---- an idle daemon uses no CPU ----------------------------------------------------------------------
sleep 0.5
cpu() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }
C0=$(cpu); sleep 2; C1=$(cpu)
echo "info: idle CPU over 2 s: $((C1 - C0)) ticks (of $(getconf CLK_TCK)/s)"
check "idle daemon: under 2% of a core" [ $((C1 - C0)) -le $(( $(getconf CLK_TCK) * 2 * 2 / 100 )) ]
check "SIGTERM with nothing in flight exits 0" stop_daemon TERM

finish
