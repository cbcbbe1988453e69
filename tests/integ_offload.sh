#!/usr/bin/env bash
# integ_offload.sh — cloud offload end to end with two daemons on loopback, one acting as the
# other's cloud: offload when the queue is full, when the estimated wait passes the deadline,
# when the prompt is longer than the local context, when no model is loaded, when the request
# asks for it, and in prefer mode; X-Edgellm-Offload: never and mode off respected (503, not
# the cloud); streaming through the cloud; the cloud's answer cached; cloud down and a slow
# cloud (time-out) falling back to local; the API key sent to the cloud and nowhere else; the
# audit table; metrics by reason and outcome.
. "$(dirname "$0")/daemon_lib.sh"

[ -x "$EDGELLMD" ] || { echo "FAIL: $EDGELLMD not built"; exit 1; }
[ -f "$MODEL" ] || { echo "FAIL: model $MODEL missing (SHARED=$SHARED)"; exit 1; }

src() { sed -n 's/^[Xx]-[Ee]dgellm-[Ss]ource: *\([a-z]*\).*/\1/p' "$TMP/headers"; }
# sql DB QUERY: one value from the edge daemon's database
sql() { python3 -c "import sqlite3,sys; r=sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone(); print(r[0] if r else '')" "$@"; }
ID=$(basename "$MODEL" .gguf)
LONG='{"prompt":"a","max_tokens":8000,"temperature":0,"stream":true,"edgellm":{"route":"local"}}'
SECRET=sk-edgellm-test-$$-secret

# ---- the cloud: a second edgellmd --------------------------------------------------------------
start_daemon cloud --model "$MODEL" --queue 8 --ctx 8192 || exit 1
CLOUD=$URL
CLOUD_LOG=$LOG

# ---- the edge: queue of 0 (one running, none waiting), a smaller context, offload to the cloud ---
EDGE_DB=$TMP/edge.db
EDGELLM_OFFLOAD_KEY=$SECRET start_daemon edge --model "$MODEL" --queue 0 --ctx 2048 --cache-db "$EDGE_DB" \
    --offload-url "$CLOUD/v1" --offload-mode fallback --offload-audit-content || exit 1
EDGE=$URL; EDGE_LOG=$LOG; EDGE_PID=$PID
check "start-up log names the endpoint and where the key came from, not the key" \
    bash -c "grep -q 'offload fallback to http://127.0.0.1:[0-9]*/v1 (API key from environment)' '$EDGE_LOG'"

REQ='{"prompt":"Once upon a time","max_tokens":12,"temperature":0}'
check "no trigger: served locally" [ "$(status_of "$EDGE/v1/completions" -d "$REQ")" = 200 -a "$(src)" = local ]

# forced route, not streamed and streamed
FORCED='{"prompt":"The cloud says","max_tokens":10,"temperature":0,"edgellm":{"route":"cloud"}}'
check "route cloud: answered by the cloud" [ "$(status_of "$EDGE/v1/completions" -d "$FORCED")" = 200 -a "$(src)" = cloud ]
check "... labelled with the local model id" jq_py "j['model'] == '$ID' and j['object'] == 'text_completion' and j['usage']['completion_tokens'] > 0"
check "... the cloud did see it" grep -q 'POST /v1/completions 200' "$CLOUD_LOG"
for _ in $(seq 1 50); do [ "$(metric edgellm_cache_stores_total)" -ge 2 ] && break; sleep 0.05; done
check "... and its answer is cached like a local one" \
    [ "$(status_of "$EDGE/v1/completions" -d "$FORCED")" = 200 -a "$(src)" = cache ]
c -N "$EDGE/v1/chat/completions" -D "$TMP/headers" -o "$TMP/sse" \
    -d '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":10,"stream":true,"stream_options":{"include_usage":true},"edgellm":{"route":"cloud"}}'
check "route cloud, streamed: answered by the cloud" [ "$(src)" = cloud ]
check "... and its SSE passes through well-formed, with usage" sse_ok "$TMP/sse" usage
check "... as our chunks (local id)" grep -q "\"model\":\"$ID\"" "$TMP/sse"
check "metric: offloads by reason (requested)" [ "$(metric 'edgellm_offloads_total{reason="requested"}')" = 2 ]

# prompt longer than the local context (2048 tokens; the cloud's is 8192)
PROMPT=$(python3 -c "print('word ' * 3000)")
check "prompt too long for the local context: offloaded" \
    [ "$(status_of "$EDGE/v1/completions" -d '{"prompt":"'"$PROMPT"'","max_tokens":4}')" = 200 -a "$(src)" = cloud ]
check "... reason context" [ "$(metric 'edgellm_offloads_total{reason="context"}')" = 1 ]
check "... with never: the device's own answer (400), not the cloud" \
    [ "$(status_of "$EDGE/v1/completions" -H 'X-Edgellm-Offload: never' -d '{"prompt":"'"$PROMPT"'","max_tokens":4}')" = 400 ]

# queue full: keep the worker busy, then ask again
curl -sS -m 120 -N "$EDGE/v1/completions" -o "$TMP/long" -d "$LONG" &
LONGPID=$!
for _ in $(seq 1 100); do [ "$(metric edgellm_worker_busy)" = 1 ] && break; sleep 0.05; done
check "queue full: offloaded to the cloud" \
    [ "$(status_of "$EDGE/v1/completions" -d '{"prompt":"queue is full","max_tokens":6}')" = 200 -a "$(src)" = cloud ]
check "... reason queue_full" [ "$(metric 'edgellm_offloads_total{reason="queue_full"}')" = 1 ]
check "queue full + X-Edgellm-Offload: never: 503 queue_full, it stays" \
    [ "$(status_of "$EDGE/v1/completions" -H 'X-Edgellm-Offload: never' -d '{"prompt":"private","max_tokens":6}')" = 503 ]
check "... code queue_full" jq_py "j['error']['code'] == 'queue_full'"
# (not $FORCED itself: its answer is cached by now, and a cache hit never leaves the device)
check "never + route cloud: 503 offload_not_allowed" \
    [ "$(status_of "$EDGE/v1/completions" -H 'X-Edgellm-Offload: never' -d '{"prompt":"private too","edgellm":{"route":"cloud"}}')" = 503 ]
check "... code" jq_py "j['error']['code'] == 'offload_not_allowed'"
check "queue full + route local: 503, it stays" \
    [ "$(status_of "$EDGE/v1/completions" -d '{"prompt":"local only","max_tokens":6,"edgellm":{"route":"local"}}')" = 503 ]
check "a misspelt X-Edgellm-Offload is refused (400), never taken as allow" \
    [ "$(status_of "$EDGE/v1/completions" -H 'X-Edgellm-Offload: nevr' -d '{"prompt":"x"}')" = 400 ]
check "the private prompts never reached the cloud" bash -c "! grep -q 'private\|local only' '$CLOUD_LOG'"
kill $LONGPID 2>/dev/null; wait $LONGPID 2>/dev/null
for _ in $(seq 1 100); do [ "$(metric edgellm_worker_busy)" = 0 ] && break; sleep 0.05; done

# the audit table, and the key
check "audit: one row per exchange, with reason, status and sizes" \
    [ "$(sql "$EDGE_DB" "SELECT COUNT(*) FROM offload_audit WHERE outcome='ok' AND http_status=200 AND request_bytes>0 AND response_bytes>0")" -ge 4 ]
check "... reasons recorded" [ "$(sql "$EDGE_DB" "SELECT group_concat(DISTINCT reason) FROM (SELECT reason FROM offload_audit ORDER BY reason)")" = "context,queue_full,requested" ]
check "... content kept (--offload-audit-content)" [ "$(sql "$EDGE_DB" "SELECT COUNT(*) FROM offload_audit WHERE request LIKE '%queue is full%'")" = 1 ]
c "$EDGE/v1/status" > "$TMP/status"; c "$EDGE/metrics" > "$TMP/metrics"
check "the key is in no log, status or metrics" \
    bash -c "! grep -q -- '$SECRET' '$EDGE_LOG' '$CLOUD_LOG' '$TMP/status' '$TMP/metrics'"
check "... nor in the database" bash -c "! grep -aq -- '$SECRET' '$EDGE_DB'*"
stop_daemon TERM

# ---- the estimated wait passes the deadline -------------------------------------------------------
start_daemon deadline --model "$MODEL" --queue 4 --offload-url "$CLOUD/v1" || exit 1
c "$URL/v1/completions" -d '{"prompt":"warm up","max_tokens":64,"temperature":0.5}' >/dev/null
# a deadline of half the service time the daemon has measured: one job ahead is too many
HURRY=$(c "$URL/v1/status" | python3 -c "import json,sys; print(round(json.load(sys.stdin)['queue']['service_ms_ewma'] / 2000, 3))")
curl -sS -m 120 -N "$URL/v1/completions" -o "$TMP/long" -d "$LONG" &
LONGPID=$!
for _ in $(seq 1 100); do [ "$(metric edgellm_worker_busy)" = 1 ] && break; sleep 0.05; done
check "estimated wait past the deadline: offloaded" \
    [ "$(status_of "$URL/v1/completions" -d '{"prompt":"in a hurry","max_tokens":4,"timeout":'"$HURRY"'}')" = 200 -a "$(src)" = cloud ]
check "... reason deadline" [ "$(metric 'edgellm_offloads_total{reason="deadline"}')" = 1 ]
kill $LONGPID 2>/dev/null; wait $LONGPID 2>/dev/null
stop_daemon INT

# ---- prefer mode; mode off -------------------------------------------------------------------
start_daemon prefer --model "$MODEL" --offload-url "$CLOUD/v1" --offload-mode prefer || exit 1
check "mode prefer: the cloud first" [ "$(status_of "$URL/v1/completions" -d '{"prompt":"prefer","max_tokens":4}')" = 200 -a "$(src)" = cloud ]
check "... reason prefer" [ "$(metric 'edgellm_offloads_total{reason="prefer"}')" = 1 ]
check "mode prefer + never: local" \
    [ "$(status_of "$URL/v1/completions" -H 'X-Edgellm-Offload: never' -d '{"prompt":"prefer","max_tokens":4}')" = 200 -a "$(src)" = local ]
stop_daemon TERM
start_daemon off --model "$MODEL" --offload-url "$CLOUD/v1" --offload-mode off || exit 1
check "mode off: route cloud is 503 offload_not_allowed" \
    [ "$(status_of "$URL/v1/completions" -d "$FORCED")" = 503 ] && jq_py "j['error']['code'] == 'offload_not_allowed'"
stop_daemon TERM

# ---- no local model -------------------------------------------------------------------------
start_daemon nomodel --offload-url "$CLOUD/v1" --offload-model "$ID" || exit 1
check "no local model: offloaded" \
    [ "$(status_of "$URL/v1/chat/completions" -d '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":4}')" = 200 -a "$(src)" = cloud ]
check "... reason no_model" [ "$(metric 'edgellm_offloads_total{reason="no_model"}')" = 1 ]
check "no local model + never: 503 model_not_loaded" \
    [ "$(status_of "$URL/v1/completions" -H 'X-Edgellm-Offload: never' -d '{"prompt":"x"}')" = 503 ] && jq_py "j['error']['code'] == 'model_not_loaded'"
stop_daemon TERM

# ---- cloud down: a closed port -------------------------------------------------------------------
DOWN=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1]); s.close()")
start_daemon down --model "$MODEL" --offload-url "http://127.0.0.1:$DOWN/v1" || exit 1
check "cloud down: falls back to local" [ "$(status_of "$URL/v1/completions" -d "$FORCED")" = 200 -a "$(src)" = local ]
check "... streamed too" \
    bash -c "curl -s -m 60 -N -D '$TMP/headers' -o '$TMP/sse' '$URL/v1/completions' -d '{\"prompt\":\"x\",\"max_tokens\":4,\"stream\":true,\"edgellm\":{\"route\":\"cloud\"}}' && grep -qi '^x-edgellm-source: local' '$TMP/headers'" &&
    sse_ok "$TMP/sse"
check "... metric: refused, fell back" \
    [ "$(metric 'edgellm_cloud_outcomes_total{outcome="refused"}')" = 2 -a "$(metric edgellm_cloud_fallbacks_total)" = 2 ]
check "... logged with the reason" grep -q 'reason=requested -> refused .*falling back to local' "$LOG"
check "... audited" [ "$(sql "$TMP/down.state/cache.db" "SELECT COUNT(*) FROM offload_audit WHERE outcome='refused'")" = 2 ]
stop_daemon TERM

# ---- slow cloud: accepts, records the request, never answers --------------------------------------------
python3 - "$TMP/slow.port" "$TMP/slow.req" <<'PY' &
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(8)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
s.settimeout(60)
conns = []
try:
    while True:
        c, _ = s.accept(); conns.append(c)
        c.settimeout(5)
        try:
            open(sys.argv[2], "ab").write(c.recv(65536))
        except OSError:
            pass
except OSError:
    pass
PY
SLOWPID=$!
DAEMONS+=("$SLOWPID")
for _ in $(seq 1 50); do [ -s "$TMP/slow.port" ] && break; sleep 0.1; done
echo "$SECRET" > "$TMP/key"
start_daemon slow --model "$MODEL" --offload-url "http://127.0.0.1:$(cat "$TMP/slow.port")/v1" \
    --offload-timeout-ms 700 --offload-key-file "$TMP/key" || exit 1
T0=$(date +%s.%N)
check "slow cloud: time-out, then local" [ "$(status_of "$URL/v1/completions" -d "$FORCED")" = 200 -a "$(src)" = local ]
T1=$(date +%s.%N)
echo "info: slow cloud: answered locally after $(python3 -c "print(round($T1 - $T0, 2))") s (offload time-out 0.7 s)"
check "... metric timeout, fell back" \
    [ "$(metric 'edgellm_cloud_outcomes_total{outcome="timeout"}')" = 1 -a "$(metric edgellm_cloud_fallbacks_total)" = 1 ]
check "the key from --offload-key-file went to the cloud as a bearer token" \
    grep -aq "Authorization: Bearer $SECRET" "$TMP/slow.req"
check "... and nowhere in the log" bash -c "! grep -q -- '$SECRET' '$LOG'"
# a client that gives up while its request is at the (slow) cloud cancels the exchange
curl -s -m 0.3 "$URL/v1/completions" -H 'Cache-Control: no-cache' -d "$FORCED" >/dev/null 2>&1
for _ in $(seq 1 40); do grep -q -- '-> cancelled' "$LOG" && break; sleep 0.1; done
check "client gone during a cloud exchange: aborted at once, not fallen back" \
    grep -q 'reason=requested -> cancelled (HTTP 0, 0 bytes) [0-4][0-9][0-9]\.[0-9] ms' "$LOG"
check "SIGTERM: exits 0" stop_daemon TERM
kill "$SLOWPID" 2>/dev/null

finish
