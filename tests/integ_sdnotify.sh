#!/usr/bin/env bash
# integ_sdnotify.sh — edgellmd speaking systemd's protocols without systemd (daemon/sdnotify.h):
#   - readiness: under a fake $NOTIFY_SOCKET (a python3 datagram listener that asks /health
#     the moment READY=1 arrives) the daemon sends STATUS= while the model loads, READY=1 only
#     once /health is 200, WATCHDOG=1 every half $WATCHDOG_USEC, RELOADING=1 with
#     MONOTONIC_USEC and then READY=1 on SIGHUP, STOPPING=1 on SIGTERM; READY=1 at once
#     without a model, and also when the model fails (the API is up, /health says why);
#   - socket activation: a python3 wrapper binds a TCP and a Unix socket, passes them as fds
#     3 and 4 with LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES and execs edgellmd, which serves on
#     them instead of binding its own, and leaves the inherited socket file alone at exit;
#     a descriptor that is not a socket is refused.
. "$(dirname "$0")/daemon_lib.sh"

[ -x "$EDGELLMD" ] || { echo "FAIL: $EDGELLMD not built"; exit 1; }
[ -f "$MODEL" ] || { echo "FAIL: model $MODEL missing (SHARED=$SHARED)"; exit 1; }

# ---- the fake systemd: one JSON line per datagram, with /health's status at READY=1 --------------
cat > "$TMP/notify.py" <<'PY'
import http.client, json, socket, sys, time
path, out, health_sock = sys.argv[1:4]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
f = open(out, "a", buffering=1)

class UnixHTTP(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(health_sock)

while True:
    msg = s.recv(65536).decode()
    rec = {"t": time.monotonic(), "msg": msg.split("\n")}
    if "READY=1" in rec["msg"]:
        try:
            c = UnixHTTP("localhost", timeout=5)
            c.request("GET", "/health")
            rec["health"] = c.getresponse().status
        except Exception as e:
            rec["health"] = str(e)
    f.write(json.dumps(rec) + "\n")
PY

# listen NAME: a listener for the daemon about to be started as NAME; sets NOTIFY and MSGS.
listen() {
    NOTIFY=$TMP/$1.notify
    MSGS=$TMP/$1.jsonl
    : > "$MSGS"
    python3 "$TMP/notify.py" "$NOTIFY" "$MSGS" "$TMP/$1.sock" &
    DAEMONS+=($!)
    for _ in $(seq 1 100); do [ -S "$NOTIFY" ] && return 0; sleep 0.05; done
    return 1
}
# msgs EXPR: the Python expression EXPR holds for m = the list of records so far.
msgs() {
    python3 -c 'import json,sys; m=[json.loads(l) for l in open(sys.argv[2])]; sys.exit(0 if eval(sys.argv[1]) else 1)' \
        "$1" "$MSGS" 2>/dev/null
}
# wait_msg EXPR: waits (up to 10 s) until msgs EXPR holds.
wait_msg() { for _ in $(seq 1 200); do msgs "$1" && return 0; sleep 0.05; done; return 1; }

listen nd || { echo "FAIL: the notify listener did not start"; exit 1; }
EDGELLMD_WRAPPER="env NOTIFY_SOCKET=$NOTIFY WATCHDOG_USEC=200000" start_daemon nd --model "$MODEL" || exit 1
wait_msg "any('READY=1' in r['msg'] for r in m)"
ready='next(i for i, r in enumerate(m) if "READY=1" in r["msg"])'
check "STATUS=loading ... before READY=1" \
    msgs "any(l.startswith('STATUS=loading') for r in m[:$ready] for l in r['msg'])"
check "READY=1 only once /health was 200 (asked when it arrived)" msgs "m[$ready]['health'] == 200"
check "READY=1 comes with STATUS=serving the model" msgs "any(l.startswith('STATUS=serving') for l in m[$ready]['msg'])"
check "watchdog period logged (half of WATCHDOG_USEC)" grep -q 'systemd watchdog: a ping every 100 ms' "$LOG"
sleep 1.2
check "WATCHDOG=1 again and again (at least 8 in 1.2 s at 100 ms)" \
    msgs "sum(r['msg'] == ['WATCHDOG=1'] for r in m) >= 8"
check "... at a steady pace (no gap over 400 ms)" msgs "
(lambda t: len(t) > 1 and max(b - a for a, b in zip(t, t[1:])) < 0.4)([r['t'] for r in m if r['msg'] == ['WATCHDOG=1']])"

kill -HUP "$PID"
wait_msg "any('RELOADING=1' in r['msg'] for r in m)"
reloading='next(i for i, r in enumerate(m) if "RELOADING=1" in r["msg"])'
check "SIGHUP: RELOADING=1 with MONOTONIC_USEC" \
    msgs "any(l.startswith('MONOTONIC_USEC=') and int(l[15:]) > 0 for l in m[$reloading]['msg'])"
wait_msg "any('READY=1' in r['msg'] for r in m[$reloading:])"
check "... then READY=1 again, /health still 200" \
    msgs "[r['health'] for r in m[$reloading:] if 'READY=1' in r['msg']][:1] == [200]"
check "SIGTERM: exits 0" stop_daemon TERM
check "... after STOPPING=1" msgs "any('STOPPING=1' in r['msg'] for r in m)"

# ---- no model: ready at once; a model that fails: ready too, with the reason ----------------------
listen none || exit 1
EDGELLMD_WRAPPER="env NOTIFY_SOCKET=$NOTIFY" start_daemon none || exit 1
check "no model: READY=1 right after listening" wait_msg "any('READY=1' in r['msg'] for r in m)"
check "... STATUS says no model is configured" msgs "any('STATUS=no model configured' in r['msg'] for r in m)"
stop_daemon TERM
echo "not a gguf" > "$TMP/bad.gguf"
listen bad || exit 1
EDGELLMD_WRAPPER="env NOTIFY_SOCKET=$NOTIFY" START_WAIT="cannot load" start_daemon bad --model "$TMP/bad.gguf" || exit 1
check "failed model: READY=1 all the same (the API is up)" wait_msg "any('READY=1' in r['msg'] for r in m)"
check "... /health was 503 then, and STATUS says to look at it" \
    msgs "[r for r in m if 'READY=1' in r['msg']][0]['health'] == 503 and any('see /health' in l for r in m for l in r['msg'])"
stop_daemon TERM
EDGELLMD_WRAPPER="env NOTIFY_SOCKET=relative/path" start_daemon badsock || exit 1
check "a malformed NOTIFY_SOCKET is logged once, and the daemon serves" \
    bash -c "[ \$(grep -c 'cannot notify systemd' '$LOG') = 1 ] && [ \"\$(curl -s -m 10 -o /dev/null -w '%{http_code}' '$URL/health')\" = 503 ]"
stop_daemon TERM

# ---- socket activation -------------------------------------------------------------------------------
cat > "$TMP/activate.py" <<'PY'
import os, socket, sys
port_file, unix_path, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp.bind(("127.0.0.1", 0))
tcp.listen(16)
unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
unix.bind(unix_path)
unix.listen(16)
open(port_file, "w").write(str(tcp.getsockname()[1]))
high = [os.dup(tcp.fileno()), os.dup(unix.fileno())]  # out of the way of 3 and 4 first
os.dup2(high[0], 3)
os.dup2(high[1], 4)
os.environ.update(LISTEN_FDS="2", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="web:local")
os.execv(argv[0], argv)  # the same process: LISTEN_PID stays right
PY
ACT=$TMP/activated.sock
EDGELLMD_WRAPPER="python3 $TMP/activate.py $TMP/port $ACT" START_WAIT="model ready" \
    start_daemon act --model "$MODEL" || exit 1
BOUND=$(cat "$TMP/port")
check "socket activation: serves the passed TCP socket (port $BOUND)" \
    bash -c "[ '$PORT' = '$BOUND' ] && grep -q 'listening on http://127.0.0.1:$BOUND (socket activation)' '$LOG'"
check "... /health 200 on it" [ "$(status_of "http://127.0.0.1:$BOUND/health")" = 200 ]
check "... and on the passed Unix socket" [ "$(c --unix-socket "$ACT" http://localhost/health)" = '{"status":"ok"}' ]
check "... a completion over it" \
    [ "$(status_of --unix-socket "$ACT" http://localhost/v1/completions -d '{"prompt":"Hi","max_tokens":4}')" = 200 ]
check "... its own --socket was not bound" [ ! -e "$SOCK" ]
check "... SIGTERM: exits 0" stop_daemon TERM
check "... and the inherited socket file is left to systemd" [ -S "$ACT" ]

bash -c "exec 3<'$MODEL'; LISTEN_FDS=1 LISTEN_PID=\$\$ exec '$EDGELLMD' --model '$MODEL' --port 0" 2>"$TMP/notsock.log"
check "LISTEN_FDS naming a file, not a socket: refused, exit 1" [ $? = 1 ]
check "... saying which fd" grep -q 'fd 3 is not a socket' "$TMP/notsock.log"

finish
