# daemon_lib.sh — shared by the tests/integ_*.sh scripts (sourced, not run): starting and
# stopping edgellmd on a free port and a Unix socket in a temp dir, curl with a time-out on
# every call, JSON assertions through python3, and one PASS/FAIL line per check.
# Expects EDGELLM_BUILD (build dir) and SHARED (reference data) in the environment.

set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${EDGELLM_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$REPO/$BUILD ;; esac
SHARED=${SHARED:-$REPO/../shared}
case $SHARED in /*) ;; *) SHARED=$REPO/$SHARED ;; esac
EDGELLMD=$BUILD/edgellmd
MODEL=${INTEG_MODEL:-$SHARED/models/qwen2-gpt2.q4_k_m.gguf}
TMP=$(mktemp -d)
PASSED=0
FAILED=0
DAEMONS=()
MOUNTS=()   # file systems a script mounted under $TMP (tmpfs disks), unmounted at exit

cleanup() {
    for pid in "${DAEMONS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    wait 2>/dev/null
    for m in "${MOUNTS[@]}"; do umount -l "$m" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT

pass() { PASSED=$((PASSED + 1)); echo "PASS: $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $1${2:+ ($2)}"; }
# check NAME COMMAND...: PASS when the command succeeds.
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name"; fi; }

# finish: the summary line, and the exit status.
finish() {
    echo "$(basename "$0" .sh): $PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}

# start_daemon NAME [edgellmd flags...]: starts edgellmd on 127.0.0.1 port 0 and the socket
# $TMP/NAME.sock, logging to $TMP/NAME.log, its state (cache database) in $TMP/NAME.state;
# waits until it listens (and, with a model, is ready; START_WAIT=TEXT waits for that log
# text instead). Sets PORT, PID, SOCK, LOG, URL.
start_daemon() {
    local name=$1; shift
    LOG=$TMP/$name.log
    SOCK=$TMP/$name.sock
    "$EDGELLMD" --host 127.0.0.1 --port 0 --socket "$SOCK" --state-dir "$TMP/$name.state" "$@" 2>"$LOG" &
    PID=$!
    DAEMONS+=("$PID")
    local want="listening on unix"
    case " $* " in *" --model "*) want="model ready" ;; esac
    want=${START_WAIT:-$want}
    for _ in $(seq 1 600); do
        grep -q "$want" "$LOG" 2>/dev/null && break
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    PORT=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$LOG" | head -1)
    URL=http://127.0.0.1:$PORT
    if ! grep -q "$want" "$LOG"; then
        echo "edgellmd did not start:"; cat "$LOG"; return 1
    fi
}

# stop_daemon [SIGNAL]: signals the last started daemon and waits for it; returns its status.
stop_daemon() {
    kill -"${1:-TERM}" "$PID" 2>/dev/null
    local rc=0
    wait "$PID" || rc=$?
    return $rc
}

# c ARGS...: curl with a time-out, silent, never hanging a test.
c() { curl -sS -m "${CURL_TIMEOUT:-60}" "$@"; }

# status_of ARGS...: the HTTP status curl got (body to $TMP/body, headers to $TMP/headers).
status_of() { c -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' "$@"; }

# jq_py EXPR [FILE]: evaluates the Python expression EXPR with j = the JSON in FILE (default
# $TMP/body); succeeds when it is true.
jq_py() {
    python3 -c 'import json,sys; j=json.load(open(sys.argv[2],"rb")); sys.exit(0 if eval(sys.argv[1]) else 1)' \
        "$1" "${2:-$TMP/body}" 2>/dev/null
}

# metric NAME_WITH_LABELS: its value in /metrics (0 when absent).
metric() {
    c "$URL/metrics" | awk -v m="$1" '$1 == m { print $2; found = 1 } END { if (!found) print 0 }'
}

# sse_ok FILE [usage]: every event is "data: JSON" (strict UTF-8) or a comment, the stream
# ends with data: [DONE], exactly one frame carries finish_reason, and with "usage" the
# frame before [DONE] has usage.
sse_ok() {
    python3 - "$1" "${2:-}" <<'PY'
import json, sys
raw = open(sys.argv[1], "rb").read()
events = [e for e in raw.split(b"\n\n") if e.strip()]
assert events and events[-1] == b"data: [DONE]", "no [DONE] at the end"
finishes, frames = 0, []
for e in events[:-1]:
    if e.startswith(b":"):
        continue
    assert e.startswith(b"data: "), e[:40]
    j = json.loads(e[6:].decode("utf-8", errors="strict"))
    frames.append(j)
    for ch in j.get("choices", []):
        if ch.get("finish_reason") is not None:
            finishes += 1
assert finishes == 1, "finish_reason frames: %d" % finishes
if sys.argv[2] == "usage":
    u = frames[-1]["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
PY
}
