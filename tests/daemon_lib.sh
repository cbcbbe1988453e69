# daemon_lib.sh — shared by the tests/integ_*.sh scripts (sourced, not run): starting and
# stopping edgellmd on a free port and a Unix socket in a temp dir, curl with a time-out on
# every call, JSON assertions through python3, and one PASS/FAIL line per check.
# Expects EDGELLM_BUILD (build dir) and SHARED (reference data) in the environment.
#
# EDGELLMD_WRAPPER, if set, is put in front of every edgellmd command line (word-split), e.g.
# "valgrind --error-exitcode=99 --leak-check=full"; START_TIMEOUT_S (default 60) bounds the
# wait for a daemon to be ready. Whatever runs the daemon, a sanitizer's or valgrind's report
# in any daemon log fails the script at finish: a memory error is never just a log line.

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

# remove_tmp_segments: the shared-memory copies (/dev/shm/edgellm-m2-*, engine/mstore.h) of
# model files under $TMP. A daemon leaves its copy behind on purpose (a restart attaches to
# it); a test's private model files go with $TMP, so their copies must go too. Copies of the
# reference models stay: the next script starts warm on them.
remove_tmp_segments() {
    local s real
    real=$(realpath "$TMP")
    for s in /dev/shm/edgellm-m2-*; do
        [ -e "$s" ] && head -c 8192 "$s" | grep -qaF "$real/" && rm -f "$s"
    done
    return 0
}

cleanup() {
    for pid in "${DAEMONS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    wait 2>/dev/null
    for m in "${MOUNTS[@]}"; do umount -l "$m" 2>/dev/null; done
    remove_tmp_segments
    rm -rf "$TMP"
}
trap cleanup EXIT

pass() { PASSED=$((PASSED + 1)); echo "PASS: $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $1${2:+ ($2)}"; }
# check NAME COMMAND...: PASS when the command succeeds.
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name"; fi; }

# memcheck_clean: no daemon log holds an AddressSanitizer/LeakSanitizer/UBSan report, a
# valgrind error summary above zero, or a valgrind error (a daemon killed with -9 prints no
# summary, only the errors as they happen); each report's first lines are shown.
MEMCHECK_REPORT='ERROR: (AddressSanitizer|LeakSanitizer)|runtime error: |ERROR SUMMARY: [1-9]|^==[0-9]+== (Invalid (read|write|free)|Conditional jump|Use of uninitialised|Syscall param|Mismatched free|Source and destination overlap)'
memcheck_clean() {
    local bad=0 f
    for f in "$TMP"/*.log; do
        [ -f "$f" ] || continue
        if grep -Eq "$MEMCHECK_REPORT" "$f"; then
            echo "memory error report in $(basename "$f"):"
            grep -E -m 5 -A 8 "$MEMCHECK_REPORT" "$f" | head -40
            bad=1
        fi
    done
    return $bad
}

# finish: the summary line, and the exit status.
finish() {
    check "no sanitizer or valgrind report in any daemon log" memcheck_clean
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
    # shellcheck disable=SC2086 # the wrapper is a command line
    ${EDGELLMD_WRAPPER:-} "$EDGELLMD" --host 127.0.0.1 --port 0 --socket "$SOCK" --state-dir "$TMP/$name.state" "$@" 2>"$LOG" &
    PID=$!
    DAEMONS+=("$PID")
    local want="listening on unix"
    case " $* " in *" --model "*) want="model ready" ;; esac
    want=${START_WAIT:-$want}
    for _ in $(seq 1 $((${START_TIMEOUT_S:-60} * 10))); do
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

# status_json WANT EXPR CURL_ARGS...: the request's HTTP status is WANT and the Python
# expression EXPR holds for its JSON body (as jq_py); one check for both halves.
status_json() {
    local want=$1 expr=$2 got; shift 2
    got=$(status_of "$@")
    [ "$got" = "$want" ] || { echo "    got HTTP $got: $(head -c 300 "$TMP/body")"; return 1; }
    jq_py "$expr"
}

# metric NAME_WITH_LABELS: its value in /metrics (0 when absent).
metric() {
    c "$URL/metrics" | awk -v m="$1" '$1 == m { print $2; found = 1 } END { if (!found) print 0 }'
}

# rss_kb PID: the process's resident memory (VmRSS) in kB.
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# rss_meaningful: the daemon runs natively, so its RSS says what it holds (under ASan freed
# memory waits in the quarantine, under a wrapper such as valgrind in the tool's heap; there
# the tool's own leak check at exit does the job).
rss_meaningful() {
    [ -z "${EDGELLMD_WRAPPER:-}" ] && ! ldd "$EDGELLMD" 2>/dev/null | grep -q 'libasan\|libtsan\|libmsan'
}

# check_timing NAME COMMAND...: a check of how fast the daemon is. Natively a check; under a
# wrapper such as valgrind, which runs the daemon ~50 times slower, a SKIP line.
check_timing() {
    if [ -z "${EDGELLMD_WRAPPER:-}" ]; then
        check "$@"
    else
        echo "SKIP: $1: no time bound with edgellmd under $EDGELLMD_WRAPPER"
    fi
}

# check_rss NAME KB BOUND_KB: the check that KB <= BOUND_KB, where RSS means something; a
# SKIP line otherwise.
check_rss() {
    if rss_meaningful; then
        check "$1" [ "$2" -le "$3" ]
    else
        echo "SKIP: $1: no RSS bound under a sanitizer or valgrind (their heaps keep freed memory; their leak check at exit instead)"
    fi
}

# peak_rss_start PID / peak_rss_stop: samples the process's VmRSS every 20 ms in the
# background; stop sets RSS_PEAK to the highest value seen (kB). Call stop directly, not in
# $(...): only the shell that started the sampler can wait for its last write.
peak_rss_start() {
    rm -f "$TMP/rss_stop"
    echo 0 > "$TMP/rss_peak"
    ( peak=0; while kill -0 "$1" 2>/dev/null && [ ! -e "$TMP/rss_stop" ]; do
          r=$(rss_kb "$1"); [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" > "$TMP/rss_peak"; sleep 0.02
      done ) &
    RSS_SAMPLER=$!
}
peak_rss_stop() {
    touch "$TMP/rss_stop"
    wait "$RSS_SAMPLER"
    RSS_PEAK=$(cat "$TMP/rss_peak")
}

# all_answers: completions answered, whatever the source (local, cache, cloud).
all_answers() {
    c "$URL/metrics" | awk '$1 ~ /^edgellm_answers_total\{/ { n += $2 } END { print n + 0 }'
}

# wait_idle: waits (up to a minute) until nothing is queued or running in the last started
# daemon; fails if that does not happen.
wait_idle() {
    for _ in $(seq 1 600); do
        [ "$(metric edgellm_queue_depth)" = 0 ] && [ "$(metric edgellm_worker_busy)" = 0 ] && return 0
        sleep 0.1
    done
    return 1
}

# have_wrk: wrk (tools/deps.sh installs it) is on the PATH.
have_wrk() { command -v wrk >/dev/null; }

# wrk_run NAME SECONDS ARGS...: wrk with 2 threads and 32 connections; prints an info line
# with its figures and sets WRK_REQS (completed), WRK_NON2XX and WRK_SOCKERR (empty: none).
wrk_run() {
    local name=$1 secs=$2 out=$TMP/wrk_$1; shift 2
    wrk -t2 -c32 -d"${secs}s" --latency "$@" > "$out" 2>&1
    WRK_REQS=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$out")
    WRK_NON2XX=$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' "$out")
    WRK_SOCKERR=$(sed -n 's/^ *Socket errors: *\(.*\)/\1/p' "$out")
    echo "info: wrk $name (2 threads, 32 connections, $secs s): $(sed -n 's/^Requests\/sec: *//p' "$out") req/s," \
         "latency p50 $(awk '$1 == "50%" { print $2 }' "$out"), p99 $(awk '$1 == "99%" { print $2 }' "$out")," \
         "max $(awk '$1 == "Latency" { print $4 }' "$out"); ${WRK_REQS:-0} requests, ${WRK_NON2XX:-0} non-2xx," \
         "socket errors: ${WRK_SOCKERR:-none}"
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
