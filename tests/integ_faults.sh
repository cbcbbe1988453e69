#!/usr/bin/env bash
# integ_faults.sh — edgellmd when the world around it fails:
#   - kill -9 while answers are being stored, 50 times over: each restart opens the cache
#     (not moved aside as corrupt), SQLite's integrity check passes, every row is whole, no
#     committed answer is lost, and what the cache answers equals a fresh generation;
#   - the cache disk turning read-only: requests still served, the error logged once;
#   - a cloud endpoint that returns garbage of every kind (bad JSON, HTML, a bad SSE line,
#     the wrong shape, binary junk instead of HTTP, 500, a closed connection, an endless
#     body, a trickle, headers that never end, a stream cut after its first text) and one
#     whose answers are odd but valid (invalid UTF-8, absurd usage numbers): a local fallback
#     or a clean cloud answer, within the offload time-out, never a hang;
#   - the model file truncated or rewritten in place while mapped (no SIGBUS: a clear error
#     on /health, on completions and in the stream that was running), or replaced by rename
#     (still served from the loaded copy); truncated under a shared copy (still served);
#   - every file of the hostile-GGUF corpus as --model: refused at start with the reason on
#     /health, the daemon up and answering.
. "$(dirname "$0")/daemon_lib.sh"

[ -x "$EDGELLMD" ] || { echo "FAIL: $EDGELLMD not built"; exit 1; }
SMALL=${FAULTS_MODEL:-$SHARED/models/qwen2-gpt2-e128.f16.gguf}
[ -f "$SMALL" ] || { echo "FAIL: model $SMALL missing (SHARED=$SHARED)"; exit 1; }
[ -f "$MODEL" ] || { echo "FAIL: model $MODEL missing (SHARED=$SHARED)"; exit 1; }

src() { sed -n 's/^[Xx]-[Ee]dgellm-[Ss]ource: *\([a-z]*\).*/\1/p' "$TMP/headers"; }

# ---- kill -9 during cache writes, 50 times ---------------------------------------------------------------
# Each round: a client keeps 4 distinct deterministic requests in flight (every answer is
# stored as its connection closes) until the daemon dies; the kill comes when the store
# count is seen rising, i.e. in the middle of the writes.
KILLS=${FAULTS_KILLS:-50}
# (FAULTS_KILLS=0 leaves the rounds out: `make valgrind`, where a daemon that slow makes the
# timing of the kills meaningless and what they test is SQLite, not our memory)
if [ "$KILLS" -gt 0 ]; then
    DB=$TMP/killdb/cache.db
    mkdir -p "$TMP/killdb"
    cat > "$TMP/storm.py" <<'PY'
import json, sys, threading, urllib.request
url, rnd = sys.argv[1], sys.argv[2]
def worker(w):
    k = w
    while True:
        body = json.dumps({"prompt": "kill %s request %d" % (rnd, k), "max_tokens": 1 + k % 5, "temperature": 0})
        try:
            urllib.request.urlopen(urllib.request.Request(url + "/v1/completions", body.encode()), timeout=30).read()
        except Exception:
            return  # the daemon is gone
        k += 4
threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
for t in threads: t.start()
for t in threads: t.join()
PY
    ROWS_BEFORE=0
    BAD_OPEN=0; BAD_CHECK=0; LOST=0; MID_WRITE=0
    for i in $(seq 1 "$KILLS"); do
        start_daemon "kill$i" --model "$SMALL" --cache-db "$DB" >/dev/null || { BAD_OPEN=$((BAD_OPEN + 1)); continue; }
        grep -q 'was corrupt\|running without a cache' "$LOG" && BAD_OPEN=$((BAD_OPEN + 1))
        python3 "$TMP/storm.py" "$URL" "$i" &
        STORM=$!
        sleep "$(python3 -c "import random; print(random.uniform(0.05, 0.3))")"
        S1=$(metric edgellm_cache_stores_total)
        sleep 0.02
        S2=$(metric edgellm_cache_stores_total)
        kill -KILL "$PID"
        wait "$PID" 2>/dev/null
        wait "$STORM" 2>/dev/null
        [ "$S2" -gt "$S1" ] && MID_WRITE=$((MID_WRITE + 1))
        # what a crash may leave: a WAL with committed transactions; SQLite must read it whole
        # (integrity, rows whose size column disagrees with their content, rows)
        read -r INTEGRITY TORN ROWS < <(python3 -c "
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
q = lambda s: db.execute(s).fetchone()[0]
print(q('PRAGMA integrity_check'), q('SELECT COUNT(*) FROM responses WHERE bytes != length(content) + 128'),
      q('SELECT COUNT(*) FROM responses'))" "$DB")
        [ "$INTEGRITY" = ok ] && [ "$TORN" = 0 ] || BAD_CHECK=$((BAD_CHECK + 1))
        [ "$ROWS" -ge $((ROWS_BEFORE + S2)) ] || LOST=$((LOST + 1))
        ROWS_BEFORE=$ROWS
    done
    echo "info: $KILLS kill -9 while storing: $ROWS_BEFORE answers in the cache at the end; $MID_WRITE kills came while" \
         "the store count was rising"
    check "kill -9 x$KILLS: every restart opened the cache (never moved aside, never without)" [ "$BAD_OPEN" = 0 ]
    check "... integrity_check ok and every row whole after each kill" [ "$BAD_CHECK" = 0 ]
    check "... no stored answer was lost (the rows grow by at least the stores counted before each kill)" [ "$LOST" = 0 ]
    check "... the kills did land during the stores" [ "$MID_WRITE" -ge $((KILLS / 2)) ]
    start_daemon killcheck --model "$SMALL" --cache-db "$DB" || exit 1
    check "a final restart opens the cache" grep -q "cache $DB\$" "$LOG"
    # the cache's answers are the answers: each hit equals a generation of the same request
    HITS=0; DIFFER=0
    for i in $(seq 1 "$KILLS" | shuf -n 12 --random-source=<(yes)); do
        for k in 0 1 5 6; do
            REQ='{"prompt":"kill '"$i"' request '"$k"'","max_tokens":'$((1 + k % 5))',"temperature":0}'
            status_of "$URL/v1/completions" -d "$REQ" >/dev/null
            [ "$(src)" = cache ] || continue
            HITS=$((HITS + 1))
            cp "$TMP/body" "$TMP/hit"
            status_of "$URL/v1/completions" -H 'Cache-Control: no-cache, no-store' -d "$REQ" >/dev/null
            python3 -c "import json,sys; a=json.load(open('$TMP/hit')); b=json.load(open('$TMP/body')); sys.exit(a['choices'][0]['text'] != b['choices'][0]['text'] or a['usage'] != b['usage'])" ||
                DIFFER=$((DIFFER + 1))
        done
    done
    echo "info: $HITS sampled requests were cache hits after the kills"
    check "... cached answers equal fresh generations ($HITS hits compared)" [ "$HITS" -gt 0 -a "$DIFFER" = 0 ]
    stop_daemon TERM
else
    echo "SKIP: FAULTS_KILLS=0: the kill -9 rounds did not run"
fi

# ---- the cache disk turns read-only ------------------------------------------------------------------
# (A file system with a database open for writing cannot be remounted read-only (EBUSY), so
# the disk turns read-only between two runs: the database exists, with an answer in it.
# A disk filling up under a running daemon is in integ_cache.sh.)
if [ "$(id -u)" = 0 ] && mkdir -p "$TMP/rodisk" && mount -t tmpfs -o size=4m tmpfs "$TMP/rodisk" 2>/dev/null; then
    MOUNTS+=("$TMP/rodisk")
    start_daemon rw --model "$SMALL" --cache-db "$TMP/rodisk/cache.db" || exit 1
    HIT='{"prompt":"stored before the disk went read-only","max_tokens":4,"temperature":0}'
    status_of "$URL/v1/completions" -d "$HIT" >/dev/null
    for _ in $(seq 1 50); do [ "$(metric edgellm_cache_stores_total)" = 1 ] && break; sleep 0.05; done
    stop_daemon TERM
    mount -o remount,ro "$TMP/rodisk"
    start_daemon rodisk --model "$SMALL" --cache-db "$TMP/rodisk/cache.db" || exit 1
    CODES=""
    for k in $(seq 1 6); do
        CODES+=$(status_of "$URL/v1/completions" -d '{"prompt":"read-only '"$k"'","max_tokens":4,"temperature":0}')
    done
    check "read-only disk: every request served" [ "$CODES" = 200200200200200200 ]
    check "... the earlier answer too" [ "$(status_of "$URL/v1/completions" -d "$HIT")" = 200 ]
    ERRS=$(grep -c 'running without a cache\|cache: store:' "$LOG")
    check "... the cache error logged once, not per request" [ "$ERRS" = 1 ]
    grep 'running without a cache\|cache: store:' "$LOG" | sed 's/^/info: /'
    check "... SIGTERM: exits 0" stop_daemon TERM
else
    echo "SKIP: cannot mount a tmpfs (not root?): the read-only disk checks did NOT run"
fi

# ---- a cloud that answers garbage ------------------------------------------------------------------------
# The fake cloud picks its misbehaviour from the "mode-..." word in the request it gets.
python3 - "$TMP/cloud.port" <<'PY' &
import json, os, random, socket, sys, threading, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(64)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
SSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
JSON = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
def chunk(text, finish=None):
    return b"data: " + json.dumps({"choices": [{"index": 0, "text": text, "delta": {"content": text},
                                                "finish_reason": finish}]}).encode() + b"\n\n"
def serve(c):
    c.settimeout(30)
    req = b""
    try:
        while b"\r\n\r\n" not in req or b"mode-" not in req:
            b = c.recv(65536)
            if not b:
                return
            req += b
        mode = req[req.index(b"mode-") + 5:].split(b"\"")[0].split(b" ")[0].decode()
        if mode == "ok":
            c.sendall(SSE + chunk("cloud says hi") + chunk("", "stop") + b"data: [DONE]\n\n")
        elif mode == "json-garbage":
            c.sendall(JSON + b"{not json at all")
        elif mode == "html":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n<html><body>503</body></html>")
        elif mode == "sse-garbage":
            c.sendall(SSE + b"data: {oops\n\n")
        elif mode == "wrong-shape":
            c.sendall(JSON + b'{"choices":"nope","usage":[]}')
        elif mode == "binary":
            c.sendall(bytes(random.Random(1).randrange(256) for _ in range(4096)))
        elif mode == "status-500":
            c.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
                      b'{"error":{"message":"boom"}}')
        elif mode == "close":
            pass
        elif mode == "endless":
            c.sendall(JSON + b'{"choices":[{"text":"')
            block = b"a" * 65536
            while True:
                c.sendall(block)
        elif mode == "trickle":
            c.sendall(SSE)
            for b in b"data: {\"choices\":[{\"text\":\"" * 1000:
                c.sendall(bytes([b]))
                time.sleep(0.2)
        elif mode == "headers-hang":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
            time.sleep(30)
        elif mode == "cut-after-text":
            c.sendall(SSE + chunk("half an answer"))
        elif mode == "bad-utf8":
            c.sendall(SSE + b'data: {"choices":[{"index":0,"text":"ok \xff\xfe \xc3( end","delta":{"content":"ok \xff\xfe \xc3( end"},"finish_reason":null}]}\n\n'
                      + chunk("", "stop") + b"data: [DONE]\n\n")
        elif mode == "absurd-usage":
            c.sendall(JSON + b'{"choices":[{"index":0,"text":"fine","message":{"content":"fine"},"finish_reason":"stop"}],'
                             b'"usage":{"prompt_tokens":1e300,"completion_tokens":-7}}')
    except OSError:
        pass
    finally:
        c.close()
s.settimeout(600)
while True:
    try:
        c, _ = s.accept()
    except OSError:
        break
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
CLOUDPID=$!
DAEMONS+=("$CLOUDPID")
for _ in $(seq 1 50); do [ -s "$TMP/cloud.port" ] && break; sleep 0.1; done
start_daemon garbage --model "$SMALL" --offload-url "http://127.0.0.1:$(cat "$TMP/cloud.port")/v1" \
    --offload-timeout-ms 1500 --offload-connect-timeout-ms 1000 --no-cache || exit 1
# cloud_case MODE WANT_SOURCE [stream]: one request sent to the cloud; 200 from WANT_SOURCE in
# well under the time-out plus a local answer, a well-formed stream when streamed.
cloud_case() {
    local mode=$1 want=$2 stream=${3:-false} t0 t1 code ok=0
    t0=$(date +%s%N)
    code=$(c -N -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' "$URL/v1/completions" \
        -d '{"prompt":"mode-'"$mode"' please","max_tokens":6,"stream":'"$stream"',"edgellm":{"route":"cloud"}}')
    t1=$(date +%s%N)
    local ms=$(((t1 - t0) / 1000000))
    [ "$code" = 200 ] && [ "$(src)" = "$want" ] && [ "$ms" -lt 15000 ] || ok=1
    if [ "$stream" = true ]; then sse_ok "$TMP/body" || ok=1
    else python3 -c 'import json,sys; json.loads(open(sys.argv[1],"rb").read().decode("utf-8","strict"))' "$TMP/body" || ok=1
    fi
    [ $ok = 0 ] || echo "    HTTP $code from $(src) in $ms ms: $(head -c 300 "$TMP/body")"
    return $ok
}
check "cloud ok (control): answered by the cloud" cloud_case ok cloud
for mode in json-garbage html sse-garbage wrong-shape binary status-500 close endless trickle headers-hang cut-after-text; do
    check "cloud $mode: local fallback, no hang" cloud_case "$mode" local
    # a streamed answer cut after its first text cannot fall back: that text reached the client
    [ "$mode" = cut-after-text ] ||
        check "cloud $mode, streamed: local fallback, well-formed stream" cloud_case "$mode" local true
done
check "cloud cut after text, streamed: the text, an error frame, [DONE], in time" bash -c "
    curl -s -m 15 -N -o '$TMP/cut' '$URL/v1/completions' -d '{\"prompt\":\"mode-cut-after-text\",\"stream\":true,\"edgellm\":{\"route\":\"cloud\"}}' &&
    grep -q 'half an answer' '$TMP/cut' && grep -q '^data: {\"error\"' '$TMP/cut' && tail -c 14 '$TMP/cut' | grep -q 'data: \[DONE\]'"
check "cloud invalid UTF-8 in its answer: served from the cloud, valid UTF-8 JSON" cloud_case bad-utf8 cloud
check "... streamed: strict UTF-8 frames" cloud_case bad-utf8 cloud true
check "cloud absurd usage numbers: served from the cloud" cloud_case absurd-usage cloud
check "... usage not negative nor wrapped" jq_py "j['usage']['prompt_tokens'] >= 0 and j['usage']['completion_tokens'] >= 0"
c "$URL/metrics" | grep '^edgellm_cloud_outcomes_total' | sed 's/^/info: /'
check "the daemon survived all of it: /health 200" [ "$(status_of "$URL/health")" = 200 ]
check "... SIGTERM: exits 0" stop_daemon TERM
kill "$CLOUDPID" 2>/dev/null

# ---- the model file truncated, rewritten or replaced while mapped ------------------------------------------
# (--no-shm: the daemon maps the file itself; the shared copy, the default, is checked last)
cp "$MODEL" "$TMP/trunc.gguf"
start_daemon trunc --model "$TMP/trunc.gguf" --no-cache --no-shm || exit 1
TRUNC_PID=$PID
check "before: a completion is served" [ "$(status_of "$URL/v1/completions" -d '{"prompt":"a","max_tokens":4}')" = 200 ]
curl -sS -m 120 -N "$URL/v1/completions" -o "$TMP/trunc_stream" \
    -d '{"prompt":"a","max_tokens":4000,"temperature":0,"stream":true}' &
STREAM=$!
for _ in $(seq 1 100); do [ "$(metric edgellm_worker_busy)" = 1 ] && break; sleep 0.05; done
sleep 0.3
truncate -s $(($(stat -c %s "$MODEL") / 3)) "$TMP/trunc.gguf"
wait $STREAM
check "truncated mid-stream: no crash (same process)" kill -0 "$TRUNC_PID"
check "... the running stream ends with an error frame naming the file, then [DONE]" bash -c "
    grep -q '^data: {\"error\":{\"message\":\"the model file .*trunc.gguf was truncated or rewritten' '$TMP/trunc_stream' &&
    tail -c 14 '$TMP/trunc_stream' | grep -q 'data: \[DONE\]'"
check "... /health: 503 error, saying why" status_json 503 \
    "j['status'] == 'error' and 'trunc.gguf was truncated or rewritten' in j['message'] and 'restart' in j['message']" "$URL/health"
check "... completions: 503 model_not_loaded with the reason" \
    status_json 503 "j['error']['code'] == 'model_not_loaded' and 'truncated' in j['error']['message']" \
    "$URL/v1/completions" -d '{"prompt":"a","max_tokens":4}'
check "... /tokenize: 503 too" [ "$(status_of "$URL/tokenize" -d '{"content":"a"}')" = 503 ]
check "... logged once" [ "$(grep -c 'trunc.gguf was truncated or rewritten' "$LOG")" = 1 ]
check "... SIGTERM: exits 0" stop_daemon TERM

# truncated with nothing running: the next request already knows (one fstat per request)
cp "$MODEL" "$TMP/idle.gguf"
start_daemon idle --model "$TMP/idle.gguf" --no-cache --no-shm || exit 1
truncate -s 4096 "$TMP/idle.gguf"
check "truncated while idle: /health 503 at once" [ "$(status_of "$URL/health")" = 503 ]
check "... /tokenize: 503 as well" [ "$(status_of "$URL/tokenize" -d '{"content":"hello"}')" = 503 ]
check "... no SIGBUS: same process" kill -0 "$PID"
check "... SIGTERM: exits 0" stop_daemon TERM

# rewritten in place (cp over it: truncate, then write other bytes)
cp "$MODEL" "$TMP/rewrite.gguf"
start_daemon rewrite --model "$TMP/rewrite.gguf" --no-cache --no-shm || exit 1
cp "$SMALL" "$TMP/rewrite.gguf"
check "rewritten in place: 503 with the reason" \
    status_json 503 "'rewritten' in j['error']['message']" "$URL/v1/completions" -d '{"prompt":"a","max_tokens":4}'
check "... no crash: same process" kill -0 "$PID"
check "... SIGTERM: exits 0" stop_daemon TERM

# replaced by rename: the mapped file lives on, so the loaded model keeps serving
cp "$MODEL" "$TMP/renamed.gguf"
start_daemon renamed --model "$TMP/renamed.gguf" --no-cache --no-shm || exit 1
cp "$SMALL" "$TMP/renamed.gguf.new" && mv "$TMP/renamed.gguf.new" "$TMP/renamed.gguf"
check "replaced by rename: still served from the loaded file" \
    [ "$(status_of "$URL/v1/completions" -d '{"prompt":"a","max_tokens":4}')" = 200 ]
check "... /health 200" [ "$(status_of "$URL/health")" = 200 ]
check "... SIGTERM: exits 0" stop_daemon TERM

# a model served from its shared copy in /dev/shm does not care what happens to the file
cp "$MODEL" "$TMP/shared.gguf"
start_daemon shared --model "$TMP/shared.gguf" --no-cache || exit 1
truncate -s 4096 "$TMP/shared.gguf"
check "shared copy, file truncated: still served" \
    [ "$(status_of "$URL/v1/completions" -d '{"prompt":"a","max_tokens":4}')" = 200 ]
check "... /health 200" [ "$(status_of "$URL/health")" = 200 ]
check "... SIGTERM: exits 0" stop_daemon TERM

# ---- the hostile-GGUF corpus as --model ---------------------------------------------------------------------
REFUSED=0; TOTAL=0
for f in "$REPO"/tests/fuzz/corpus/gguf/hostile-*.gguf; do
    TOTAL=$((TOTAL + 1))
    name=$(basename "$f" .gguf)
    START_WAIT="cannot load" start_daemon "$name" --model "$f" --no-cache >/dev/null || continue
    reason=$(sed -n 's/.*cannot load [^:]*: //p' "$LOG" | head -1)
    if [ -n "$reason" ] && [ "$(status_of "$URL/health")" = 503 ] && jq_py "j['status'] == 'error' and len(j['message']) > 10" &&
        [ "$(status_of "$URL/v1/completions" -d '{"prompt":"x"}')" = 503 ] && stop_daemon TERM; then
        REFUSED=$((REFUSED + 1))
    else
        echo "    $name: not refused cleanly (reason '$reason')"
    fi
done
check "hostile GGUF corpus: all $TOTAL files refused at start with a reason, the daemon up, exit 0" [ "$REFUSED" = "$TOTAL" -a "$TOTAL" -gt 30 ]

finish
