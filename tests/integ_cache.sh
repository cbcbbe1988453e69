#!/usr/bin/env bash
# integ_cache.sh — edgellmd's response cache end to end: a repeated deterministic request is
# answered from the cache (header X-Edgellm-Source, same content byte for byte, replayed as
# SSE when streamed), Cache-Control no-cache / no-store, sampled requests not cached,
# metrics; cache-hit latency against a local generation (p50/p99 over 1000 requests);
# a corrupt database at start (moved aside), a read-only and a full disk (requests still
# served, the error logged once), and the model hash remembered across restarts.
. "$(dirname "$0")/daemon_lib.sh"

[ -x "$EDGELLMD" ] || { echo "FAIL: $EDGELLMD not built"; exit 1; }
[ -f "$MODEL" ] || { echo "FAIL: model $MODEL missing (SHARED=$SHARED)"; exit 1; }

src() { sed -n 's/^[Xx]-[Ee]dgellm-[Ss]ource: *\([a-z]*\).*/\1/p' "$TMP/headers"; }
# text_of FILE: the content of a completion (JSON) or of a stream (deltas joined), as JSON.
text_of() {
    python3 - "$1" <<'PY'
import json, sys
raw = open(sys.argv[1], "rb").read()
if raw.startswith(b"data:") or raw.startswith(b":"):
    out = ""
    for e in raw.split(b"\n\n"):
        if e.startswith(b"data: {"):
            for ch in json.loads(e[6:]).get("choices", []):
                out += ch.get("text") or ch.get("delta", {}).get("content") or ""
else:
    ch = json.loads(raw)["choices"][0]
    out = ch["text"] if "text" in ch else ch["message"]["content"]
print(json.dumps(out))
PY
}

DB=$TMP/db/cache.db
mkdir -p "$TMP/db"
# --no-shm: the model file is mapped, so its hash is the cache database's to remember (below)
start_daemon cache --model "$MODEL" --cache-db "$DB" --no-shm || exit 1
check "the database is where --cache-db says, in WAL mode" \
    bash -c "[ -f '$DB' ] && python3 -c \"import sqlite3; print(sqlite3.connect('$DB').execute('PRAGMA journal_mode').fetchone()[0])\" | grep -qx wal"

# ---- hit and replay ---------------------------------------------------------------------
REQ='{"prompt":"Once upon a time","max_tokens":24,"temperature":0}'
check "first request: 200 from local" [ "$(status_of "$URL/v1/completions" -d "$REQ")" = 200 -a "$(src)" = local ]
cp "$TMP/body" "$TMP/first"
check "... a miss" [ "$(metric edgellm_cache_misses_total)" = 1 ]
for _ in $(seq 1 50); do [ "$(metric edgellm_cache_stores_total)" = 1 ] && break; sleep 0.05; done
check "... stored" [ "$(metric edgellm_cache_stores_total)" = 1 ]
check "same request again: 200 from cache" [ "$(status_of "$URL/v1/completions" -d "$REQ")" = 200 -a "$(src)" = cache ]
check "... content byte-identical" [ "$(text_of "$TMP/first")" = "$(text_of "$TMP/body")" ]
check "... same usage and finish_reason, a new id" \
    python3 -c "import json,sys; a=json.load(open('$TMP/first')); b=json.load(open('$TMP/body')); sys.exit(not (a['usage']==b['usage'] and a['choices'][0]['finish_reason']==b['choices'][0]['finish_reason'] and a['id']!=b['id']))"
check "... counted as a hit" [ "$(metric edgellm_cache_hits_total)" = 1 ]
check "... and as an answer from the cache" [ "$(metric 'edgellm_answers_total{source="cache"}')" = 1 ]
SREQ='{"prompt":"Once upon a time","max_tokens":24,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}'
c -N "$URL/v1/completions" -D "$TMP/headers" -o "$TMP/sse" -d "$SREQ"
check "streamed: replayed from the cache as SSE" [ "$(src)" = cache ]
check "... well-formed, one finish_reason, usage, [DONE]" sse_ok "$TMP/sse" usage
check "... the deltas join to the same content" [ "$(text_of "$TMP/sse")" = "$(text_of "$TMP/first")" ]
# a streamed answer generated locally, then replayed: identical content
CREQ='{"messages":[{"role":"user","content":"Tell me a story"}],"max_tokens":20,"seed":11,"temperature":0.9,"stream":true}'
c -N "$URL/v1/chat/completions" -D "$TMP/headers" -o "$TMP/sse_local" -d "$CREQ"
check "chat stream with a seed: local first" [ "$(src)" = local ]
for _ in $(seq 1 50); do [ "$(metric edgellm_cache_stores_total)" = 2 ] && break; sleep 0.05; done
c -N "$URL/v1/chat/completions" -D "$TMP/headers" -o "$TMP/sse_hit" -d "$CREQ"
check "... then from the cache" [ "$(src)" = cache ]
check "... same content" [ "$(text_of "$TMP/sse_local")" = "$(text_of "$TMP/sse_hit")" ]
check "... framing" sse_ok "$TMP/sse_hit"

# ---- Cache-Control ---------------------------------------------------------------------------
status_of "$URL/v1/completions" -H 'Cache-Control: no-cache' -d "$REQ" >/dev/null
check "Cache-Control: no-cache skips the lookup" [ "$(src)" = local ]
NS='{"prompt":"no store please","max_tokens":8,"temperature":0}'
status_of "$URL/v1/completions" -H 'Cache-Control: no-store' -d "$NS" >/dev/null
sleep 0.2
status_of "$URL/v1/completions" -d "$NS" >/dev/null
check "Cache-Control: no-store keeps nothing" [ "$(src)" = local ]
SAMPLED='{"prompt":"sampled","max_tokens":8,"temperature":0.8}'
status_of "$URL/v1/completions" -d "$SAMPLED" >/dev/null
sleep 0.2
status_of "$URL/v1/completions" -d "$SAMPLED" >/dev/null
check "a sampled request without a seed is not cached" [ "$(src)" = local ]
check "the access log names the source" grep -q 'POST /v1/completions 200 .* source=cache' "$LOG"
check "metrics: evictions and store errors exported" \
    bash -c "c() { curl -s -m 10 \"\$@\"; }; c '$URL/metrics' | grep -q '^edgellm_cache_evictions_total 0' && c '$URL/metrics' | grep -q '^edgellm_cache_store_errors_total 0'"

# ---- latency: 1000 cache hits against local generations of the same request --------------
python3 - "$PORT" "$REQ" > "$TMP/lat" <<'PY'
import http.client, json, sys, time
port, body = int(sys.argv[1]), sys.argv[2]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
def once(headers):
    t = time.perf_counter()
    conn.request("POST", "/v1/completions", body, headers)
    r = conn.getresponse(); r.read()
    return (time.perf_counter() - t) * 1e3, r.getheader("X-Edgellm-Source")
def pct(v, p): v = sorted(v); return v[min(len(v) - 1, int(p / 100 * len(v)))]
hits = [once({}) for _ in range(1000)]
local = [once({"Cache-Control": "no-cache, no-store"}) for _ in range(20)]
assert all(s == "cache" for _, s in hits) and all(s == "local" for _, s in local)
h = [x for x, _ in hits]; l = [x for x, _ in local]
print("%.3f %.3f %.3f %.3f" % (pct(h, 50), pct(h, 99), pct(l, 50), pct(l, 99)))
PY
read -r H50 H99 L50 L99 < "$TMP/lat"
# the daemon's own time for the same hits, from its access log (request start to last byte)
read -r D50 D99 < <(grep 'POST /v1/completions 200 .* source=cache' "$LOG" | tail -1000 |
    sed -n 's/.* ms=\([0-9.]*\) source=cache.*/\1/p' | sort -g |
    awk '{ v[NR] = $1 } END { print v[int(NR * 0.5) + 1], v[int(NR * 0.99) + 1] }')
echo "info: cache hit, client round trip over loopback (1000 requests): p50 ${H50} ms, p99 ${H99} ms; daemon time p50 ${D50} ms, p99 ${D99} ms"
echo "info: local generation of the same request (24 tokens, 20 requests): p50 ${L50} ms, p99 ${L99} ms"
check_timing "1000 cache hits: daemon time p99 under 1 ms" python3 -c "import sys; sys.exit(not ${D99:-9} < 1.0)"
check "cache hit p50 at least 10x faster than local generation" python3 -c "import sys; sys.exit(not ${H50:-99} * 10 < ${L50:-0})"
check "SIGTERM: exits 0" stop_daemon TERM

# ---- model hash remembered; corrupt database at start ----------------------------------------------
check "first start computed the model's sha256" grep -q 'model sha256 [0-9a-f]\{64\} (computed' "$LOG"
start_daemon cache2 --model "$MODEL" --cache-db "$DB" --no-shm || exit 1
check "a restart remembers it" grep -q 'model sha256 [0-9a-f]\{64\} (remembered' "$LOG"
FILE_SHA=$(sed -n 's/.*model sha256 \([0-9a-f]\{64\}\).*/\1/p' "$LOG" | head -1)
check "... and the cache survived the restart" [ "$(status_of "$URL/v1/completions" -d "$REQ")" = 200 -a "$(src)" = cache ]
stop_daemon TERM
head -c 65536 /dev/urandom > "$DB"
rm -f "$DB-wal" "$DB-shm"
start_daemon corrupt --model "$MODEL" --cache-db "$DB" || exit 1
check "with the shared copy, the hash is the one the copy recorded: the same as the file's" \
    grep -q "model sha256 $FILE_SHA (\(computed while copying\|remembered by the shared copy\))" "$LOG"
check "corrupt database: moved aside, logged" grep -q 'cache.db was corrupt: moved to .*cache.db.corrupt-' "$LOG"
check "... the daemon serves" [ "$(status_of "$URL/v1/completions" -d "$REQ")" = 200 -a "$(src)" = local ]
for _ in $(seq 1 50); do [ "$(metric edgellm_cache_stores_total)" = 1 ] && break; sleep 0.05; done
check "... and caches again in a new file" [ "$(status_of "$URL/v1/completions" -d "$REQ")" = 200 -a "$(src)" = cache ]
check "... the old file kept beside it" bash -c "ls '$DB'.corrupt-* >/dev/null"
stop_daemon TERM

# ---- --no-cache; a small cache evicts -------------------------------------------------------------
start_daemon nocache --model "$MODEL" --no-cache || exit 1
status_of "$URL/v1/completions" -d "$REQ" >/dev/null
sleep 0.2
check "--no-cache: the same request twice is generated twice" \
    [ "$(status_of "$URL/v1/completions" -d "$REQ")" = 200 -a "$(src)" = local ]
check "... and no database is made (no offload to audit either)" [ ! -e "$TMP/nocache.state/cache.db" ]
stop_daemon TERM
start_daemon small --model "$MODEL" --cache-max-bytes 4096 || exit 1
for i in $(seq 1 30); do c "$URL/v1/completions" -d '{"prompt":"small cache '"$i"'","max_tokens":16,"temperature":0}' >/dev/null; done
for _ in $(seq 1 50); do [ "$(metric edgellm_cache_stores_total)" = 30 ] && break; sleep 0.05; done
check "--cache-max-bytes 4096: the least recently used answers are evicted" [ "$(metric edgellm_cache_evictions_total)" -gt 0 ]
check "... the newest is still there" \
    [ "$(status_of "$URL/v1/completions" -d '{"prompt":"small cache 30","max_tokens":16,"temperature":0}')" = 200 -a "$(src)" = cache ]
check "... the oldest is not" \
    [ "$(status_of "$URL/v1/completions" -d '{"prompt":"small cache 1","max_tokens":16,"temperature":0}')" = 200 -a "$(src)" = local ]
stop_daemon TERM

# ---- read-only and full disks -------------------------------------------------------------------------------
if [ "$(id -u)" = 0 ] && mkdir -p "$TMP/ro" "$TMP/full" && mount -t tmpfs -o ro,size=1m tmpfs "$TMP/ro" 2>/dev/null; then
    MOUNTS+=("$TMP/ro")
    start_daemon ro --model "$MODEL" --cache-db "$TMP/ro/cache.db" || exit 1
    check "read-only disk: logged, the daemon runs without a cache" grep -q 'running without a cache' "$LOG"
    check "... requests are served" [ "$(status_of "$URL/v1/completions" -d "$REQ")" = 200 -a "$(src)" = local ]
    check "... again from local" [ "$(status_of "$URL/v1/completions" -d "$REQ")" = 200 -a "$(src)" = local ]
    stop_daemon TERM
    mount -t tmpfs -o size=1m tmpfs "$TMP/full"
    MOUNTS+=("$TMP/full")
    start_daemon full --model "$MODEL" --cache-db "$TMP/full/cache.db" || exit 1
    # fill what is left of the disk
    dd if=/dev/zero of="$TMP/full/filler" bs=4k 2>/dev/null
    for i in 1 2 3 4; do
        status_of "$URL/v1/completions" -d '{"prompt":"full disk '"$i"' '"$(head -c 3000 /dev/zero | tr '\0' x)"'","max_tokens":4,"temperature":0}' > "$TMP/code$i"
    done
    check "full disk: every request served" [ "$(cat "$TMP"/code1 "$TMP"/code2 "$TMP"/code3 "$TMP"/code4 | tr -d '\n')" = 200200200200 ]
    for _ in $(seq 1 50); do [ "$(metric edgellm_cache_store_errors_total)" -ge 4 ] && break; sleep 0.05; done
    check "... every failed store counted" [ "$(metric edgellm_cache_store_errors_total)" -ge 4 ]
    check "... the error logged once, not per request" [ "$(grep -c 'cache: store:' "$LOG")" = 1 ]
    grep 'cache: store:' "$LOG" | sed 's/^/info: /'
    stop_daemon TERM
else
    echo "SKIP: cannot mount a tmpfs (not root?): the read-only and full disk checks did NOT run"
fi

finish
