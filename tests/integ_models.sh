#!/usr/bin/env bash
# integ_models.sh — several models from a models directory (daemon/models.h): /v1/models lists
# every *.gguf with its state; the "model" field picks one, which loads on demand while the
# others wait in the same queue; requests for different models interleave correctly; a model
# idle past its keep-alive is unloaded (the configured one, or the request's "keep_alive"),
# the default one never; loading it again attaches to its shared copy (warm); an unknown
# model is 404 naming the ones there are; a file added to the directory is served without a
# restart; the memory budget refuses a model larger than itself (503 saying so) and makes
# room for one that fits by unloading the least recently used.
. "$(dirname "$0")/daemon_lib.sh"

[ -x "$EDGELLMD" ] || { echo "FAIL: $EDGELLMD not built"; exit 1; }
M=$SHARED/models
for f in qwen2-gpt2.q4_k_m llama-spm.q4_k_m llama-spm.q8_0; do
    [ -f "$M/$f.gguf" ] || { echo "FAIL: model $M/$f.gguf missing (SHARED=$SHARED)"; exit 1; }
done
DIR=$TMP/models
mkdir -p "$DIR"
ln -s "$M/qwen2-gpt2.q4_k_m.gguf" "$DIR/qwen.gguf"   # 13.3 MB
ln -s "$M/llama-spm.q4_k_m.gguf" "$DIR/llama.gguf"   # 13.0 MB
ln -s "$M/llama-spm.q8_0.gguf" "$DIR/big.gguf"       # 19.8 MB
touch "$DIR/notes.txt"                                # not a model

# states: "id=state ..." of /v1/models, sorted by id.
states() {
    c "$URL/v1/models" | python3 -c 'import json,sys; print(" ".join(sorted("%s=%s" % (m["id"], m["state"]) for m in json.load(sys.stdin)["data"])))'
}
# wait_states WANT: waits (up to 10 s) until states prints WANT.
wait_states() { for _ in $(seq 1 100); do [ "$(states)" = "$1" ] && return 0; sleep 0.1; done; echo "    states: $(states)"; return 1; }
# ask MODEL [EXTRA_JSON]: a short completion for MODEL; the status, and the body in $TMP/body.
ask() { status_of "$URL/v1/completions" -d '{"model":"'"$1"'","prompt":"Hello","max_tokens":4,"temperature":0'"${2:-}"'}'; }

START_WAIT="model ready" start_daemon multi --models-dir "$DIR" --model qwen --model-keep-alive-s 2 || exit 1
check "/v1/models lists every model of the directory: the default loaded, the others not" \
    [ "$(states)" = "big=unloaded llama=unloaded qwen=loaded" ]
check "... the default one says so" status_json 200 "[m['id'] for m in j['data'] if m.get('default')] == ['qwen']" "$URL/v1/models"
check "a request naming llama: 200, answered by llama" \
    bash -c "[ \"\$(curl -s -m 60 -o '$TMP/l1' -w '%{http_code}' '$URL/v1/completions' -d '{\"model\":\"llama\",\"prompt\":\"Hello\",\"max_tokens\":4}')\" = 200 ] &&
             python3 -c \"import json,sys; sys.exit(json.load(open('$TMP/l1'))['model'] != 'llama')\""
check "... it was loaded on demand, and is listed loaded" \
    bash -c "grep -q 'loaded $DIR/llama.gguf (id llama' '$LOG' && [ \"\$(curl -s -m 10 '$URL/v1/models' | grep -o '\"id\":\"llama\"[^}]*\"state\":\"loaded\"')\" ]"
check "no model named: the default answers" \
    bash -c "[ \"\$(curl -s -m 60 '$URL/v1/completions' -d '{\"prompt\":\"Hello\",\"max_tokens\":4}' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"model\"])')\" = qwen ]"

# interleaved: every answer comes from the model its request named, whatever the order
CLIENTS=()
for i in 1 2 3 4 5 6; do
    model=$(echo "qwen llama big" | cut -d' ' -f$(( (i - 1) % 3 + 1 )))
    c -o "$TMP/mix$i" "$URL/v1/chat/completions" \
        -d '{"model":"'"$model"'","messages":[{"role":"user","content":"Hi"}],"max_tokens":6}' &
    CLIENTS+=($!)
    echo "$model" > "$TMP/mix$i.want"
done
wait "${CLIENTS[@]}"
check "6 requests for 3 models at once: each answered by its own model" python3 -c "
import json, sys
ok = all(json.load(open('$TMP/mix%d' % i))['model'] == open('$TMP/mix%d.want' % i).read().strip() for i in range(1, 7))
sys.exit(not ok)"
check "... the worker switched models (big loaded too)" grep -q "loaded $DIR/big.gguf (id big" "$LOG"

check "keep-alive 2 s: idle models are unloaded, the default one stays" \
    wait_states "big=unloaded llama=unloaded qwen=loaded"
check "... logged with the idle time, the shared copy kept" \
    grep -q 'unloaded llama after [0-9]* s idle (its shared copy stays' "$LOG"
check "loading it again attaches to its shared copy (warm)" \
    bash -c "[ \"\$(curl -s -m 60 -o /dev/null -w '%{http_code}' '$URL/v1/completions' -d '{\"model\":\"llama\",\"prompt\":\"a\",\"max_tokens\":2}')\" = 200 ] &&
             [ \"\$(grep 'loaded $DIR/llama.gguf' '$LOG' | tail -1 | grep -c 'attached (warm)')\" = 1 ]"
check "a request's keep_alive 0 unloads its model right after" \
    bash -c "[ \"\$(curl -s -m 60 -o /dev/null -w '%{http_code}' '$URL/v1/completions' -d '{\"model\":\"big\",\"prompt\":\"a\",\"max_tokens\":2,\"keep_alive\":0}')\" = 200 ]"
check "... (within a second)" bash -c "for _ in \$(seq 1 10); do curl -s -m 10 '$URL/v1/models' | grep -q '\"id\":\"big\"[^}]*\"unloaded\"' && exit 0; sleep 0.1; done; exit 1"
check "a request's keep_alive \"1h\" keeps its model past the configured 2 s" [ "$(ask llama ',"keep_alive":"1h"')" = 200 ]
sleep 3
check "... still loaded 3 s later" [ "$(states)" = "big=unloaded llama=loaded qwen=loaded" ]
check "keep_alive that is not a duration: 400" [ "$(ask llama ',"keep_alive":"soon"')" = 400 ]
# a request that leaves the queue before it runs (its client gave up) still counts as done
c -o /dev/null "$URL/v1/completions" -d '{"model":"qwen","prompt":"a","max_tokens":1500}' &
LONG=$!
for _ in $(seq 1 100); do status_json 200 "j['in_flight'] is not None" "$URL/v1/status" >/dev/null && break; sleep 0.01; done
curl -s -m 0.2 -o /dev/null "$URL/v1/completions" -d '{"model":"llama","prompt":"a","max_tokens":2,"keep_alive":0}'
wait "$LONG"
check "a request for llama abandoned while queued (keep_alive 0): llama is unloaded all the same" \
    wait_states "big=unloaded llama=unloaded qwen=loaded"

check "unknown model: 404 model_not_found naming the models there are" \
    status_json 404 "j['error']['code'] == 'model_not_found' and 'nope' in j['error']['message'] and all(m in j['error']['message'].split('available: ')[1].split(', ') for m in ('big', 'llama', 'qwen'))" \
    "$URL/v1/completions" -d '{"model":"nope","prompt":"a"}'
ln -s "$M/llama-spm.q4_0.gguf" "$DIR/late.gguf"
check "a file added to the directory is listed without a restart" \
    wait_states "big=unloaded late=unloaded llama=unloaded qwen=loaded"
check "... and served" [ "$(ask late)" = 200 ]
check "/tokenize for a model that is not loaded: 503 saying a completion loads it" \
    status_json 503 "'loads it' in j['error']['message']" "$URL/tokenize" -d '{"model":"big","content":"a"}'
check "/tokenize for a loaded one: 200" [ "$(status_of "$URL/tokenize" -d '{"model":"late","content":"Hello"}')" = 200 ]
check "SIGTERM: exits 0" stop_daemon TERM

# ---- the memory budget: 16 MiB holds qwen or llama, not both, and never big -----------------------
rm "$DIR/late.gguf"
start_daemon budget --models-dir "$DIR" --memory-budget-mb 16 || exit 1
check "no default and several models: 'model' is required (400)" \
    status_json 400 "j['error']['code'] == 'invalid_parameter' and 'is required' in j['error']['message']" \
    "$URL/v1/completions" -d '{"prompt":"a"}'
check "a model larger than the budget: 503 model_not_loaded, saying so, before it queues" \
    status_json 503 "j['error']['code'] == 'model_not_loaded' and 'over the memory budget of 16.0 MiB' in j['error']['message']" \
    "$URL/v1/completions" -d '{"model":"big","prompt":"a","max_tokens":2}'
check "qwen fits" [ "$(ask qwen)" = 200 ]
check "llama fits, once qwen made room" [ "$(ask llama)" = 200 ]
check "... qwen was unloaded for it, its shared copy removed (logged)" \
    grep -q 'unloaded qwen ([0-9.]* MiB, shared copy removed) to make room for llama (the memory budget)' "$LOG"
check "... /v1/models says so" [ "$(states)" = "big=unloaded llama=loaded qwen=unloaded" ]
check "and back: qwen again, llama makes room" \
    bash -c "[ \"\$(curl -s -m 60 -o /dev/null -w '%{http_code}' '$URL/v1/completions' -d '{\"model\":\"qwen\",\"prompt\":\"a\",\"max_tokens\":2}')\" = 200 ] &&
             grep -q 'unloaded llama ([0-9.]* MiB, shared copy removed) to make room for qwen' '$LOG'"
check "SIGTERM: exits 0" stop_daemon TERM

finish
