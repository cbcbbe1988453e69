#!/usr/bin/env bash
# integ_abuse.sh — hostile clients against edgellmd: bodies over the limit (by Content-Length,
# an absurd one, chunked and endless), deeply nested JSON, huge max_tokens, every numeric field
# out of range and unknown llama.cpp-style ones (n_probs), invalid UTF-8 and bad escapes in
# prompts, token ids outside the vocabulary in /detokenize, malformed HTTP (request line,
# header size and count, methods, paths, binary junk, pipelining), a burst of bad requests in
# parallel, and slowloris: 200 idle or byte-at-a-time connections while normal clients are
# served. Every answer must be a 4xx (or a 200 where the input is legal), every JSON answer
# valid UTF-8; afterwards the daemon is the same process, healthy, exits 0 on SIGTERM and
# no sanitizer or valgrind report appeared (this script is the valgrind subset: it runs
# under EDGELLMD_WRAPPER, see daemon_lib.sh; timings are not asserted, only outcomes).
. "$(dirname "$0")/daemon_lib.sh"

[ -x "$EDGELLMD" ] || { echo "FAIL: $EDGELLMD not built"; exit 1; }
SMALL=${ABUSE_MODEL:-$SHARED/models/qwen2-gpt2-e128.f16.gguf}
[ -f "$SMALL" ] || { echo "FAIL: model $SMALL missing (SHARED=$SHARED)"; exit 1; }

LIMIT=65536
start_daemon abuse --model "$SMALL" --ctx 64 --body-limit $LIMIT --read-timeout-ms 3000 --idle-timeout-s 30 || exit 1
N_VOCAB=50257 # the GPT-2 vocabulary of the shared qwen2 models

# code_is WANT ARGS...: the status is WANT and a JSON body is valid UTF-8 JSON.
code_is() {
    local want=$1; shift
    local got
    got=$(status_of "$@")
    [ "$got" = "$want" ] || { echo "    got HTTP $got: $(head -c 300 "$TMP/body")"; return 1; }
    grep -qi '^content-type: application/json' "$TMP/headers" || return 0
    python3 -c 'import json,sys; json.loads(open(sys.argv[1],"rb").read().decode("utf-8","strict"))' "$TMP/body" ||
        { echo "    not valid UTF-8 JSON"; return 1; }
}
# json_4xx ARGS...: any 4xx with an OpenAI error body.
json_4xx() {
    local got
    got=$(status_of "$@")
    case $got in 4??) ;; *) echo "    got HTTP $got: $(head -c 300 "$TMP/body")"; return 1 ;; esac
    jq_py "j['error']['message'] and j['error']['type'] == 'invalid_request_error'"
}

# ---- bodies over the limit ------------------------------------------------------------------------
head -c $((LIMIT + 1)) /dev/zero | tr '\0' ' ' > "$TMP/over"
check "body one byte over the limit: 413" code_is 413 "$URL/v1/completions" --data-binary @"$TMP/over"
head -c $((LIMIT - 16)) /dev/zero | tr '\0' ' ' > "$TMP/under"
check "body just under the limit is read (400: no JSON object), not 413" \
    code_is 400 "$URL/v1/completions" --data-binary @"$TMP/under"
check "Content-Length: 10^20 (overflows) is 413" \
    code_is 413 "$URL/v1/completions" -H 'Content-Length: 99999999999999999999' -d x
check "Content-Length: -5 is 400" code_is 400 "$URL/v1/completions" -H 'Content-Length: -5' -d x
# chunked, endless: the daemon answers 413 and hangs up instead of reading for ever
python3 - "$PORT" > "$TMP/endless" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
chunk = b"4000\r\n" + b"a" * 0x4000 + b"\r\n"
sent = 0
try:
    while sent < 64 << 20:
        s.sendall(chunk)
        sent += len(chunk)
except OSError:
    pass
try:
    status = s.recv(4096).decode(errors="replace").split("\r\n")[0].split(" ")[1]
except (OSError, IndexError):
    status = "closed"
print(status, sent)
PY
read -r ENDLESS_STATUS ENDLESS_SENT < "$TMP/endless"
echo "info: endless chunked upload: answered ${ENDLESS_STATUS:-?} after ${ENDLESS_SENT:-?} bytes"
check "an endless chunked body is refused (413) and cut off long before 64 MiB" \
    [ "${ENDLESS_STATUS:-}" = 413 -a "${ENDLESS_SENT:-99999999}" -lt 16000000 ]

# ---- JSON structure -------------------------------------------------------------------------------
python3 -c "print('[' * 60000)" > "$TMP/deep"
check "60000 nested arrays: 400 invalid_json" code_is 400 "$URL/v1/completions" --data-binary @"$TMP/deep"
python3 -c "print('{\"a\":' * 10000 + '1' + '}' * 10000)" > "$TMP/deep_obj"
check "10000 nested objects: 400 invalid_json" code_is 400 "$URL/v1/chat/completions" --data-binary @"$TMP/deep_obj"
python3 -c "print('{\"prompt\":\"x\",\"max_tokens\":1,\"junk\":' + '[' * 900 + ']' * 900 + '}')" > "$TMP/deep_ok"
check "900 nested arrays in an unknown field: accepted and ignored (200)" \
    code_is 200 "$URL/v1/completions" --data-binary @"$TMP/deep_ok"
python3 -c "print('{\"messages\":[' + ','.join(['{\"role\":\"user\",\"content\":\"x\"}'] * 1800) + '],\"max_tokens\":1}')" > "$TMP/many"
check "1800 messages: 200 or 400, not a crash" bash -c "c=\$(curl -s -m 60 -o /dev/null -w '%{http_code}' '$URL/v1/chat/completions' --data-binary @'$TMP/many'); [ \"\$c\" = 200 ] || [ \"\$c\" = 400 ]"
check "messages nested in arrays: 400" json_4xx "$URL/v1/chat/completions" -d '{"messages":[[[[[]]]]]}'
check "content parts of an unknown type: 400" \
    json_4xx "$URL/v1/chat/completions" -d '{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]}'
check "a JSON array body: 400" json_4xx "$URL/v1/completions" -d '[{"prompt":"x"}]'
check "an empty body: 400" json_4xx "$URL/v1/completions" -d ''
check "trailing garbage after the object: 400" json_4xx "$URL/v1/completions" -d '{"prompt":"x"} {"prompt":"y"}'

# ---- numbers: huge, out of range, of the wrong kind ----------------------------------------------------
check "max_tokens 2^30: accepted, bounded by the context (64)" code_is 200 "$URL/v1/completions" \
    -d '{"prompt":"x","max_tokens":1073741824,"temperature":0}'
# (the last token is sampled from the logits of position 63 and never fed: 64 + 1)
check "... finish_reason length within the context" \
    jq_py "j['choices'][0]['finish_reason'] == 'length' and j['usage']['total_tokens'] <= 65"
for bad in '"max_tokens":1073741825' '"max_tokens":1e300' '"max_tokens":-1' '"max_tokens":0' '"max_tokens":2.5' \
           '"max_tokens":"12"' '"max_completion_tokens":1e20' '"n":2' '"n":0' '"top_k":-1' '"top_k":1e10' \
           '"top_p":1.5' '"top_p":-0.1' '"min_p":2' '"temperature":1e308' '"temperature":-1' '"temperature":1e400' \
           '"repeat_penalty":11' '"presence_penalty":3' '"frequency_penalty":-2.5' '"seed":1e300' \
           '"seed":1e17' '"timeout":0' '"timeout":1e12' '"stream":"yes"' '"stream_options":[]' \
           '"stop":""' '"stop":[""]' '"stop":["a","b","c","d","e"]' '"stop":{"a":1}' '"edgellm":{"route":"moon"}' \
           '"edgellm":[]' '"model":7'; do
    check "completion with $bad: 400 naming the field" json_4xx "$URL/v1/completions" -d '{"prompt":"x",'"$bad"'}'
done
check "llama.cpp/OpenAI fields we do not implement (n_probs, logprobs, top_logprobs) are ignored" \
    code_is 200 "$URL/v1/completions" -d '{"prompt":"x","max_tokens":2,"n_probs":1e300,"logprobs":true,"top_logprobs":99999,"best_of":1e9}'

# ---- text: invalid UTF-8, escapes -------------------------------------------------------------------------
printf '{"prompt":"\xff\xfe \xc3( \xed\xa0\x80 \xf4\x90\x80\x80 \xe2\x82","max_tokens":8}' > "$TMP/bad_utf8"
check "invalid UTF-8 in a prompt: 200, the answer valid UTF-8 JSON" code_is 200 "$URL/v1/completions" --data-binary @"$TMP/bad_utf8"
printf '{"messages":[{"role":"user","content":"\xc0\xaf\xff"}],"max_tokens":8}' > "$TMP/bad_utf8_chat"
check "invalid UTF-8 in a chat message: 200" code_is 200 "$URL/v1/chat/completions" --data-binary @"$TMP/bad_utf8_chat"
printf '{"prompt":"\xff\xfe\xc3(","max_tokens":16,"stream":true,"temperature":1.5,"seed":9}' > "$TMP/bad_utf8_stream"
c -N "$URL/v1/completions" -o "$TMP/sse_bad" --data-binary @"$TMP/bad_utf8_stream"
check "... streamed: strict UTF-8 frames" sse_ok "$TMP/sse_bad"
printf '{"content":"\xff\xc3(abc\xe2\x82","with_pieces":true}' > "$TMP/bad_utf8_tok"
check "/tokenize of invalid UTF-8 with pieces: 200, valid JSON" code_is 200 "$URL/tokenize" --data-binary @"$TMP/bad_utf8_tok"
check "a lone surrogate escape: 400 invalid_json" json_4xx "$URL/v1/completions" -d '{"prompt":"\ud800x"}'
check "an escaped NUL in a prompt: 200" code_is 200 "$URL/v1/completions" -d '{"prompt":"a\u0000b","max_tokens":2}'
check "control characters in a role: 400" json_4xx "$URL/v1/chat/completions" -d '{"messages":[{"role":"us\u0001er","content":"x"}]}'

# ---- /detokenize ------------------------------------------------------------------------------------------
check "/detokenize of the last id of the vocabulary: 200" code_is 200 "$URL/detokenize" -d "{\"tokens\":[$((N_VOCAB - 1))]}"
for bad in "[$N_VOCAB]" '[-1]' '[2147483648]' '[1.5]' '["1"]' '[null]' '[1e300]' '{"0":1}' '"1,2"'; do
    check "/detokenize tokens=$bad: 400" json_4xx "$URL/detokenize" -d '{"tokens":'"$bad"'}'
done
check "/detokenize without tokens: 400" json_4xx "$URL/detokenize" -d '{}'
check "/detokenize of no tokens: 200, empty content" code_is 200 "$URL/detokenize" -d '{"tokens":[]}'
check "/detokenize of lone byte tokens: 200, valid UTF-8" code_is 200 "$URL/detokenize" -d '{"tokens":[188,189,190,220,255]}'
python3 -c "import random; random.seed(5); print('{\"tokens\":[' + ','.join(str(random.randrange($N_VOCAB)) for _ in range(8000)) + ']}')" > "$TMP/many_ids"
check "/detokenize of 8000 random ids: 200, valid UTF-8" code_is 200 "$URL/detokenize" --data-binary @"$TMP/many_ids"

# ---- malformed HTTP ---------------------------------------------------------------------------------------
python3 - "$PORT" > "$TMP/raw" <<'PY'
import re, socket, sys
port = int(sys.argv[1])
def exchange(data, answers=None, timeout=10):
    """Sends data, then reads until the server closes (or, with answers, until that many
    status lines came: a pipelining client keeps its side open)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    out = b""
    try:
        s.sendall(data)
        if not answers:
            s.shutdown(socket.SHUT_WR)
        while not answers or out.count(b"HTTP/1.1 ") < answers:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except OSError as e:
        out = out or b"reset"
    s.close()
    return out
cases = {
    "garbage request line": b"GARBAGE\r\n\r\n",
    "binary junk": bytes(range(256)) * 16,
    "HTTP/0.9": b"GET /health\r\n\r\n",
    "HTTP/9.9": b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n",
    "unknown method": b"BREW /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "100 KB path": b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "NUL in the path": b"GET /hea\0lth HTTP/1.1\r\nHost: x\r\n\r\n",
    "100 KB header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 100000 + b"\r\n\r\n",
    "5000 headers": b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n",
    "header without colon": b"GET /health HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n",
    "bad chunk size": b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
    "two Content-Lengths": b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\n{\"a\":",
    "pipelined pair": b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
}
for name, data in cases.items():
    out = exchange(data, 2 if name == "pipelined pair" else None)
    # (a body has no line end: the next response's status line follows it directly)
    statuses = [m.decode() for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", out)]
    print("%s|%s|%s" % (name, ",".join(statuses) or "-", "reset" if out == b"reset" else len(out)))
PY
while IFS='|' read -r name statuses _; do
    case $name in
        "pipelined pair") check "raw: $name: both answered ($statuses)" [ "$statuses" = "200,200" ] ;;
        "HTTP/9.9") check "raw: $name: 505 ($statuses)" [ "$statuses" = 505 ] ;;
        *) check "raw: $name: answered 4xx or closed ($statuses)" \
               bash -c "case '$statuses' in -|4??|4??,*) exit 0 ;; *) exit 1 ;; esac" ;;
    esac
done < "$TMP/raw"

# ---- a burst of bad requests in parallel ----------------------------------------------------------------
BURST=()
for i in $(seq 1 60); do
    curl -s -m 60 -o /dev/null -w '%{http_code}\n' "$URL/v1/chat/completions" -d '{"messages":[{"role":"user"' > "$TMP/burst$i" &
    BURST+=($!)
done
wait "${BURST[@]}"
check "60 malformed requests at once: 60 times 400" [ "$(cat "$TMP"/burst* | grep -c '^400$')" = 60 ]

# ---- slowloris: 200 idle and byte-at-a-time connections ---------------------------------------------------
python3 - "$PORT" "$URL" > "$TMP/slowloris" <<'PY'
import json, socket, sys, threading, time, urllib.request
port, url = int(sys.argv[1]), sys.argv[2]
stop = threading.Event()
socks = []
for i in range(200):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    socks.append(s)
trickle = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000
def drip():
    # half the connections send one byte at a time (a header, then a body) across all of them
    k = 0
    while not stop.is_set():
        for s in socks[::2]:
            try:
                s.send(trickle[k:k + 1])
            except OSError:
                pass
        k += 1
        stop.wait(0.2)
t = threading.Thread(target=drip)
t.start()
time.sleep(0.5)
lat, codes = [], []
for i in range(20):
    t0 = time.perf_counter()
    try:
        if i % 2:
            r = urllib.request.urlopen(url + "/health", timeout=60)
        else:
            body = json.dumps({"prompt": "normal client %d" % i, "max_tokens": 4}).encode()
            r = urllib.request.urlopen(urllib.request.Request(url + "/v1/completions", body), timeout=60)
        r.read()
        codes.append(r.status)
    except Exception as e:
        codes.append(str(e)[:40])
    lat.append((time.perf_counter() - t0) * 1e3)
stop.set()
t.join()
for s in socks:
    s.close()
lat.sort()
print(" ".join(str(c) for c in codes))
print("%.1f %.1f" % (lat[len(lat) // 2], lat[-1]))
PY
CODES=$(sed -n 1p "$TMP/slowloris")
read -r LAT50 LATMAX < <(sed -n 2p "$TMP/slowloris")
echo "info: with 200 slowloris connections open, 20 normal requests: median ${LAT50:-?} ms, worst ${LATMAX:-?} ms"
check "slowloris: all 20 normal requests were served (200)" [ "$(echo "$CODES" | tr ' ' '\n' | grep -c '^200$')" = 20 ]
check "after the slowloris: /health 200" code_is 200 "$URL/health"

# ---- the same process, healthy, clean exit ------------------------------------------------------------------
check "the daemon is still the same process (it never died)" kill -0 "$PID"
check "/health is 200" code_is 200 "$URL/health"
check "a normal completion still works" code_is 200 "$URL/v1/completions" -d '{"prompt":"after the abuse","max_tokens":4}'
check "SIGTERM: exits 0" stop_daemon TERM

finish
