#!/usr/bin/env bash
# integ_systemd.sh — the systemd/ files: the units pass `systemd-analyze verify`, the
# service's `systemd-analyze security` exposure is at most 2.0, the sysusers and tmpfiles
# snippets produce the user and directories (in a scratch root), and edgellmd accepts the
# default configuration file. Needs no running systemd (works in a container); without
# systemd-analyze at all it says SKIP.
. "$(dirname "$0")/daemon_lib.sh"

UNITS=$REPO/systemd
MAX_EXPOSURE=${MAX_EXPOSURE:-2.0}

if ! command -v systemd-analyze >/dev/null; then
    echo "SKIP: systemd-analyze not installed (apt-get install systemd)"
    exit 0
fi
[ -x "$EDGELLMD" ] || { echo "FAIL: $EDGELLMD not built"; exit 1; }

# ---- verify: the units as installed, with ExecStart pointing at this build -----------------
mkdir -p "$TMP/units"
sed "s|/usr/local/bin/edgellmd|$EDGELLMD|" "$UNITS/edgellmd.service" >"$TMP/units/edgellmd.service"
cp "$UNITS/edgellmd.socket" "$TMP/units/"
# verify exits 0 on warnings such as an unknown key: any output is a failure too
if systemd-analyze verify --man=no "$TMP/units/edgellmd.service" "$TMP/units/edgellmd.socket" >"$TMP/verify" 2>&1 &&
    [ ! -s "$TMP/verify" ]; then
    pass "systemd-analyze verify edgellmd.service edgellmd.socket"
else
    fail "systemd-analyze verify" "$(tr '\n' ' ' <"$TMP/verify")"
fi

# ---- security: parse "→ Overall exposure level for edgellmd.service: 1.1 OK 🙂" -------------
systemd-analyze security --offline=yes --no-pager "$UNITS/edgellmd.service" >"$TMP/security" 2>&1
EXPOSURE=$(sed -n 's/.*Overall exposure level for edgellmd.service: \([0-9.]*\).*/\1/p' "$TMP/security")
echo "exposure: ${EXPOSURE:-?} (limit $MAX_EXPOSURE)"
check "systemd-analyze security: exposure ${EXPOSURE:-unknown} <= $MAX_EXPOSURE" \
    awk -v e="$EXPOSURE" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e != "" && e + 0 <= m + 0) }'
check "the service keeps its shared memory at stop (RemoveIPC=no, no DynamicUser)" \
    bash -c "grep -qx 'RemoveIPC=no' '$UNITS/edgellmd.service' && ! grep -q '^DynamicUser=yes' '$UNITS/edgellmd.service'"

# ---- sysusers and tmpfiles, applied to a scratch root -----------------------------------
ROOT=$TMP/root
mkdir -p "$ROOT/etc"
if command -v systemd-sysusers >/dev/null; then
    check "sysusers creates the system user edgellm" \
        bash -c "systemd-sysusers --root='$ROOT' - <'$UNITS/edgellm.sysusers' >/dev/null 2>&1 &&
                 awk -F: '\$1 == \"edgellm\" && \$3 < 1000 && \$7 ~ /nologin/ { ok = 1 } END { exit !ok }' '$ROOT/etc/passwd'"
    if [ "$(id -u)" = 0 ] && command -v systemd-tmpfiles >/dev/null; then
        check "tmpfiles creates /run/edgellm and /var/lib/edgellm/models owned by edgellm" \
            bash -c "systemd-tmpfiles --root='$ROOT' --create - <'$UNITS/edgellm.tmpfiles' >/dev/null 2>&1 &&
                     uid=\$(awk -F: '\$1 == \"edgellm\" { print \$3 }' '$ROOT/etc/passwd') &&
                     [ \"\$(stat -c %u '$ROOT/run/edgellm')\" = \"\$uid\" ] &&
                     [ \"\$(stat -c %u:%a '$ROOT/var/lib/edgellm')\" = \"\$uid:750\" ] &&
                     [ -d '$ROOT/var/lib/edgellm/models' ]"
    else
        echo "(tmpfiles check needs root to chown; skipped)"
    fi
fi

# ---- the default configuration is one edgellmd accepts --------------------------------------
check "edgellmd.json is valid JSON, and --check-config finds no problem" \
    bash -c "python3 -m json.tool '$UNITS/edgellmd.json' >/dev/null && '$EDGELLMD' --check-config '$UNITS/edgellmd.json' >/dev/null 2>&1"
mkdir -p "$TMP/state" "$TMP/models"
ln -s "$MODEL" "$TMP/models/default.gguf" # what the config's "model": "default" names
if START_WAIT="model ready" start_daemon conf --config "$UNITS/edgellmd.json" --models-dir "$TMP/models" \
    --state-dir "$TMP/state"; then
    check "edgellmd starts with the default config (models dir, TCP and socket overridden)" \
        [ "$(status_of "$URL/health")" = 200 ]
    check "... serving the models directory's default.gguf as its default model" \
        status_json 200 "[(m['id'], m['state'], m.get('default')) for m in j['data']] == [('default', 'loaded', True)]" \
        "$URL/v1/models"
    stop_daemon TERM
else
    fail "edgellmd starts with the default config" "$(tail -3 "$LOG" | tr '\n' ' ')"
fi

finish
