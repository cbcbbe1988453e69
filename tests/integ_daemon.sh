#!/usr/bin/env bash
# integ_daemon.sh — edgellmd end to end with curl: every endpoint and status code, streaming
# and not, TCP and the Unix socket, limits (413, 408), errors (400, 404, 405, 503), a
# daemon without a model, SIGTERM drain and SIGINT. Queueing, cancellation and load live in
# integ_queue.sh. Each check prints PASS/FAIL; the script exits nonzero if any failed.
. "$(dirname "$0")/daemon_lib.sh"

[ -x "$EDGELLMD" ] || { echo "FAIL: $EDGELLMD not built"; exit 1; }
[ -f "$MODEL" ] || { echo "FAIL: model $MODEL missing (SHARED=$SHARED)"; exit 1; }

# a long grace: the SIGTERM drain below must let its 200-token request finish even when the
# daemon runs 50 times slower (make valgrind)
start_daemon main --model "$MODEL" --read-timeout-ms 1500 --body-limit 65536 --grace-ms 300000 || exit 1
ID=$(basename "$MODEL" .gguf)

# ---- health, models, status, metrics -----------------------------------------------------
check "GET /health is 200 ok" [ "$(status_of "$URL/health")" = 200 ]
check "health body" jq_py 'j == {"status": "ok"}'
check "GET /health over the Unix socket" \
    [ "$(c --unix-socket "$SOCK" http://localhost/health)" = '{"status":"ok"}' ]
check "socket file is mode 0660" [ "$(stat -c %a "$SOCK")" = 660 ]
status_of "$URL/v1/models" >/dev/null
check "GET /v1/models lists the model by file name" \
    jq_py "j['object'] == 'list' and [m['id'] for m in j['data']] == ['$ID'] and j['data'][0]['object'] == 'model'"
status_of "$URL/v1/status" >/dev/null
check "GET /v1/status: model, queue, memory, uptime" \
    jq_py "j['model']['id'] == '$ID' and j['queue']['depth'] == 0 and j['queue']['capacity'] == 16 and j['in_flight'] is None and j['memory']['rss_bytes'] > 0 and j['uptime_s'] >= 0"

# ---- chat completion, not streamed ----------------------------------------------------------
CHAT='{"model":"'$ID'","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi there"}],"max_tokens":12,"temperature":0,"seed":7}'
check "POST /v1/chat/completions is 200" [ "$(status_of "$URL/v1/chat/completions" -d "$CHAT")" = 200 ]
check "chat.completion shape and usage" \
    jq_py "j['object'] == 'chat.completion' and j['id'].startswith('chatcmpl-') and j['model'] == '$ID' and j['choices'][0]['message']['role'] == 'assistant' and j['choices'][0]['finish_reason'] in ('stop', 'length') and j['usage']['prompt_tokens'] > 5 and 0 < j['usage']['completion_tokens'] <= 12 and j['usage']['total_tokens'] == j['usage']['prompt_tokens'] + j['usage']['completion_tokens']"
check "X-Edgellm-Source: local" grep -qi '^x-edgellm-source: local' "$TMP/headers"
check "X-Request-Id matches the id" \
    grep -qi "^x-request-id: $(python3 -c 'import json;print(json.load(open("'"$TMP/body"'"))["id"])')" "$TMP/headers"
cp "$TMP/body" "$TMP/chat1"
status_of "$URL/v1/chat/completions" -d "$CHAT" >/dev/null
check "same seed, same answer (greedy, prefix reused)" \
    python3 -c "import json,sys; a=json.load(open('$TMP/chat1')); b=json.load(open('$TMP/body')); sys.exit(a['choices'][0]['message'] != b['choices'][0]['message'])"
check "chat over the Unix socket" \
    [ "$(status_of --unix-socket "$SOCK" http://localhost/v1/chat/completions -d "$CHAT")" = 200 ]

# ---- completion, not streamed; stop strings -----------------------------------------------
COMP='{"prompt":"Once upon a time","max_tokens":16,"temperature":0}'
check "POST /v1/completions is 200" [ "$(status_of "$URL/v1/completions" -d "$COMP")" = 200 ]
check "text_completion shape" \
    jq_py "j['object'] == 'text_completion' and isinstance(j['choices'][0]['text'], str) and j['usage']['completion_tokens'] > 0"
cp "$TMP/body" "$TMP/greedy"
# a stop string taken from the middle of the greedy answer cuts it just before
STOP=$(python3 -c "import json; t=json.load(open('$TMP/greedy'))['choices'][0]['text']; w=[x for x in t.split(' ') if len(x) > 2]; print(json.dumps(w[len(w)//2] if w else t[4:8]))")
status_of "$URL/v1/completions" -d '{"prompt":"Once upon a time","max_tokens":16,"temperature":0,"stop":['"$STOP"']}' >/dev/null
check "stop string ends the answer just before it, finish_reason stop" \
    jq_py "j['choices'][0]['finish_reason'] == 'stop' and json.load(open('$TMP/greedy'))['choices'][0]['text'].startswith(j['choices'][0]['text'] + $STOP)"

# ---- streaming --------------------------------------------------------------------------------
c -N "$URL/v1/chat/completions" -D "$TMP/sh" -o "$TMP/sse1" \
    -d '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":10,"stream":true,"stream_options":{"include_usage":true}}'
check "chat stream: content-type text/event-stream" grep -qi '^content-type: text/event-stream' "$TMP/sh"
check "chat stream: framing, one finish_reason, usage, [DONE]" sse_ok "$TMP/sse1" usage
check "chat stream: first frame carries the assistant role" \
    python3 -c "import json,sys; f=open('$TMP/sse1','rb').read().split(b'\n\n')[0]; sys.exit(json.loads(f[6:])['choices'][0]['delta'].get('role') != 'assistant')"
c -N "$URL/v1/completions" -o "$TMP/sse2" -d '{"prompt":"The","max_tokens":10,"stream":true}'
check "completion stream: framing, one finish_reason, [DONE]" sse_ok "$TMP/sse2"
check "completion stream: no usage frame unless asked" bash -c "! grep -q '\"usage\"' '$TMP/sse2'"
c -N --unix-socket "$SOCK" http://localhost/v1/completions -o "$TMP/sse3" -d '{"prompt":"The","max_tokens":5,"stream":true}'
check "stream over the Unix socket" sse_ok "$TMP/sse3"
# multi-byte text: frames are strict UTF-8 (sse_ok decodes strictly) and stitch back together
c -N "$URL/v1/completions" -o "$TMP/sse4" -d '{"prompt":"日本語のテキスト ünïcödé €","max_tokens":40,"stream":true,"temperature":1.5,"seed":3}'
check "stream never splits a UTF-8 character" sse_ok "$TMP/sse4"

# ---- tokenize / detokenize ------------------------------------------------------------------
status_of "$URL/tokenize" -d '{"content":"Hello world, héllo"}' >/dev/null
check "POST /tokenize gives ids" jq_py "len(j['tokens']) > 2 and all(isinstance(t, int) for t in j['tokens'])"
IDS=$(python3 -c "import json; print(json.dumps(json.load(open('$TMP/body'))['tokens']))")
status_of "$URL/detokenize" -d '{"tokens":'"$IDS"'}' >/dev/null
check "POST /detokenize round-trips" jq_py "j['content'] == 'Hello world, héllo'"
status_of "$URL/tokenize" -d '{"content":"Hi","with_pieces":true}' >/dev/null
check "tokenize with_pieces" jq_py "''.join(t['piece'] for t in j['tokens']) == 'Hi'"
check "detokenize: id outside the vocabulary is 400" \
    [ "$(status_of "$URL/detokenize" -d '{"tokens":[99999999]}')" = 400 ]

# ---- errors -------------------------------------------------------------------------------------
check "bad JSON is 400 invalid_json" [ "$(status_of "$URL/v1/chat/completions" -d '{"messages":')" = 400 ]
check "error body is OpenAI-shaped" \
    jq_py "j['error']['code'] == 'invalid_json' and j['error']['type'] == 'invalid_request_error' and j['error']['message']"
check "bad parameter is 400 naming the field" \
    [ "$(status_of "$URL/v1/chat/completions" -d '{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}')" = 400 ]
check "... message names 'temperature'" jq_py "'temperature' in j['error']['message']"
check "unknown role is 400, not 500" \
    [ "$(status_of "$URL/v1/chat/completions" -d '{"messages":[{"role":"wizard","content":"x"}]}')" = 400 ]
check "unknown fields are ignored" \
    [ "$(status_of "$URL/v1/completions" -d '{"prompt":"a","max_tokens":1,"frobnicate":{"x":[1]}}')" = 200 ]
check "unknown model is 404 model_not_found" \
    [ "$(status_of "$URL/v1/chat/completions" -d '{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}')" = 404 ]
check "... code model_not_found" jq_py "j['error']['code'] == 'model_not_found'"
check "unknown route is 404" [ "$(status_of "$URL/v2/nothing")" = 404 ]
check "GET on a POST route is 405" [ "$(status_of "$URL/v1/chat/completions")" = 405 ]
check "... with Allow: POST" grep -qi '^allow: POST' "$TMP/headers"
check "DELETE /health is 405" [ "$(status_of -X DELETE "$URL/health")" = 405 ]
LONG=$(python3 -c "print('word ' * 3000)")
check "prompt longer than the context is 400 context_length_exceeded" \
    [ "$(status_of "$URL/v1/completions" -d '{"prompt":"'"$LONG"'"}')" = 400 ]
check "... code" jq_py "j['error']['code'] == 'context_length_exceeded'"
head -c 70000 /dev/zero | tr '\0' 'a' > "$TMP/big"
check "body over the limit (Content-Length) is 413" \
    [ "$(status_of "$URL/v1/completions" --data-binary @"$TMP/big")" = 413 ]
check "body over the limit (chunked) is 413" \
    [ "$(status_of "$URL/v1/completions" -H 'Transfer-Encoding: chunked' --data-binary @"$TMP/big")" = 413 ]
# a client that trickles its body slower than --read-timeout-ms gets 408
python3 - "$PORT" > "$TMP/slow" <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{")
try:
    for _ in range(30):
        time.sleep(0.25)
        s.sendall(b" ")
except OSError:
    pass
print(s.recv(4096).decode(errors="replace").split("\r\n")[0])
PY
check "slow client is 408" grep -q ' 408 ' "$TMP/slow"
check "metrics count requests by route and status" \
    [ "$(metric 'edgellm_http_requests_total{route="/v1/chat/completions",status="200"}')" -ge 3 ]
check "metrics count 404s" [ "$(metric 'edgellm_http_requests_total{route="other",status="404"}')" -ge 1 ]
c "$URL/metrics" > "$TMP/metrics"
for m in edgellm_queue_depth edgellm_queue_wait_seconds_bucket edgellm_time_to_first_token_seconds_count \
         edgellm_prompt_tokens_total edgellm_generated_tokens_total edgellm_decode_tokens_per_second \
         edgellm_cancellations_total; do
    check "metrics has $m" grep -q "^$m" "$TMP/metrics"
done
check "one log line per request" grep -q 'edgellmd: POST /v1/chat/completions 200 queue_ms=[0-9.]* prompt=[0-9]* gen=[0-9]* ms=' "$LOG"

# ---- edgellm chat, the CLI client ------------------------------------------------------------------
"$BUILD/edgellm" chat --socket "$SOCK" -p "Hello" -n 8 > "$TMP/chat_out" 2>&1
check "edgellm chat --socket streams an answer" [ $? -eq 0 -a -s "$TMP/chat_out" ]
printf 'Hi\nAnd again\n' | timeout 60 "$BUILD/edgellm" chat --url "$URL" -n 4 > "$TMP/chat_out2" 2>&1
check "edgellm chat --url keeps the conversation (two answers)" [ $? -eq 0 -a "$(wc -l < "$TMP/chat_out2")" -eq 2 ]
check "... the second turn carried the first as history" \
    python3 -c "import re,sys; p=[int(x) for x in re.findall(r'chat/completions 200 queue_ms=[0-9.]* prompt=([0-9]*)', open('$LOG').read())]; sys.exit(not (p[-1] > p[-2]))"
"$BUILD/edgellm" chat --url "$URL" -p x --model nope > "$TMP/chat_out3" 2>&1
check "edgellm chat exits 1 on the daemon's error" [ $? -eq 1 ]
check "... and reports it (HTTP 404)" grep -q "HTTP 404" "$TMP/chat_out3"

# ---- SIGTERM drains: the in-flight request completes, the daemon exits 0 -------------------
c "$URL/v1/completions" -o "$TMP/drained" -w '%{http_code}' -d '{"prompt":"a","max_tokens":200}' > "$TMP/drained_status" &
CURL=$!
sleep 0.3
check "SIGTERM: daemon exits 0" stop_daemon TERM
wait $CURL
check "SIGTERM: the in-flight request still got its answer" [ "$(cat "$TMP/drained_status")" = 200 ]
check "SIGTERM: socket file removed" [ ! -e "$SOCK" ]
check "SIGTERM: drain logged" grep -q 'SIGTERM: draining' "$LOG"

# ---- no model ---------------------------------------------------------------------------------
start_daemon nomodel || exit 1
check "no model: /health is 503 no_model" [ "$(status_of "$URL/health")" = 503 ]
check "... says so" jq_py "j['status'] == 'no_model' and '--model' in j['message']"
check "no model: completions are 503 model_not_loaded" \
    [ "$(status_of "$URL/v1/completions" -d '{"prompt":"x"}')" = 503 ]
check "... code" jq_py "j['error']['code'] == 'model_not_loaded'"
check "no model: /v1/models is an empty list" [ "$(c "$URL/v1/models")" = '{"object":"list","data":[]}' ]
check "SIGINT: exits 0" stop_daemon INT

# ---- a model that does not load ----------------------------------------------------------------
echo "not a gguf" > "$TMP/bad.gguf"
START_WAIT="cannot load" start_daemon badmodel --model "$TMP/bad.gguf" || exit 1
check "unloadable model: /health is 503 error with the reason" \
    bash -c "[ \"\$(curl -s -m 10 -o '$TMP/body' -w '%{http_code}' '$URL/health')\" = 503 ] && grep -q error '$TMP/body'"
stop_daemon INT

finish
