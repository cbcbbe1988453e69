#!/usr/bin/env bash
# integ_shm.sh — the shared-memory model store (engine/mstore.h) as its users see it.
# The CLI (daemon/cli_engine.c): by default it only attaches to an existing copy and never
# makes one, --shm makes one (cold) that the next run attaches to (warm), --no-shm maps the
# file, --mlock needs the copy, and bench --pss runs two processes on one copy.
# The daemon: its first start copies the model (cold), a restart attaches (warm, and loads
# faster), the daemon and an `edgellm run --shm` share the one copy (each charged about half
# of it in PSS), a truncated file does not touch the copy being served, --no-shm maps, and a
# file that is no model leaves no copy behind.
# Works on a private copy of a small model, and removes its segments however it ends.
. "$(dirname "$0")/daemon_lib.sh"

EDGELLM=$BUILD/edgellm
[ -x "$EDGELLM" ] || { echo "FAIL: $EDGELLM not built"; exit 1; }
M=$TMP/m.gguf
cp "$MODEL" "$M"

# segments /dev/shm/edgellm-m2-* whose header names $M (the path is in the first page)
segments() { for s in /dev/shm/edgellm-m2-*; do [ -e "$s" ] && head -c 8192 "$s" | grep -qaF "$M" && echo "$s"; done; }
remove_segments() { segments | xargs -r rm -f; }
trap 'remove_segments; cleanup' EXIT

# pss_of PID: "RSS PSS RSS-of-shmem PSS-of-shmem" in kB (/proc/PID/status, smaps_rollup).
pss_of() {
    echo "$(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status") $(awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup")" \
         "$(awk '/^RssShmem:/ { print $2 }' "/proc/$1/status") $(awk '/^Pss_Shmem:/ { print $2 }' "/proc/$1/smaps_rollup")"
}
weights_from() { "$EDGELLM" bench -m "$M" -p 8 -n 2 -r 1 "$@" 2>&1 | sed -n 's/.*weights from \(.*\), RSS.*/\1/p'; }

check "default without a copy: the file" [ "$(weights_from)" = "file mapping" ]
check "and no copy was made" [ -z "$(segments)" ]
check "--shm copies the model (cold)" [ "$(weights_from --shm)" = "shared memory, copied now (cold)" ]
seg=$(segments)
check "one segment, readable as the file is (0644)" \
    test "$(echo "$seg" | grep -c .)" = 1 -a "$(stat -c %a "$seg")" = 644
check "the default now attaches (warm)" [ "$(weights_from)" = "shared memory, attached (warm)" ]
check "--no-shm maps the file" [ "$(weights_from --no-shm)" = "file mapping" ]
! "$EDGELLM" bench -m "$M" -p 8 -n 2 -r 1 --no-shm --mlock 2>"$TMP/err" >/dev/null
check "--no-shm --mlock is refused" grep -q 'cannot go with --no-shm' "$TMP/err"
"$EDGELLM" bench -m "$M" -p 8 --pss >"$TMP/pss" 2>&1
check "bench --pss: two processes, each charged about half of the shared pages" python3 -c "
import re, sys
rows = [tuple(map(float, re.search(r'RSS ([0-9.]+) MiB, PSS ([0-9.]+) MiB.*shmem ([0-9.]+)', l).groups()))
        for l in open('$TMP/pss') if l.startswith('process')]
sys.exit(not (len(rows) == 2 and all(shm > 1 and pss < rss * 0.75 for rss, pss, shm in rows)))"
touch -d '2001-01-01' "$M" # a new version of the file: the old copy no longer applies
check "a changed file is not served from the old copy" [ "$(weights_from)" = "file mapping" ]
check "--shm on the changed file copies it again" [ "$(weights_from --shm)" = "shared memory, copied now (cold)" ]
check "and the old version's copy is gone" test "$(segments | grep -c .)" = 1 -a "$(segments)" != "$seg"

# ---- 2 MiB pages ------------------------------------------------------------------------------------
# The copy asks for 2 MiB pages and is faulted in through the mapping that asks (mstore.c's
# reserve): a tmpfs mounted huge=advise gives them to such a mapping only, huge=never never.
# Each case mounts a tmpfs of its own on /dev/shm in a private mount namespace, so the
# machine's /dev/shm is left as it is; it needs root and unshare, and says so when skipped.
huge_share() { # MOUNT_OPTION -> bench's share of the weights in 2 MiB pages, once all were read
    unshare -m --propagation private bash -c "mount -t tmpfs -o size=256m,huge=$1 tmpfs /dev/shm &&
        '$EDGELLM' bench -m '$M' --shm --json -p 8 -n 2 -r 1" 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["weights_in_2mib_pages"])'
}
if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
    HUGE=$(huge_share advise)
    echo "info: tmpfs huge=advise: ${HUGE:-?} of the weights in 2 MiB pages ($(stat -c %s "$M") bytes)"
    check "tmpfs huge=advise: the copy is in 2 MiB pages" python3 -c "import sys; sys.exit(not ${HUGE:-0} > 0.5)"
    check "tmpfs huge=never: in 4 KiB pages, and bench says so" [ "$(huge_share never)" = 0.0 ]
else
    echo "SKIP: 2 MiB pages (needs root and unshare -m)"
fi

# ---- matrices in strips -------------------------------------------------------------------------
# A copy made by a process whose kernel multiplies strips (engine/kern.h) has its Q4_0, Q8_0, Q4_K
# matrices laid out so (model_prepare_shared); one made under another kernel keeps rows. Either
# serves every process: one whose kernel has no strips kernel turns strips back into rows.
Q4=$TMP/q4.gguf
cp "$SHARED/models/llama-spm.q4_0.gguf" "$Q4"
q4_segments() { for s in /dev/shm/edgellm-m2-*; do [ -e "$s" ] && head -c 8192 "$s" | grep -qaF "$Q4" && echo "$s"; done; }
in_strips() { "$EDGELLM" bench -m "$Q4" -p 8 -n 2 -r 1 --json "$@" | python3 -c 'import json, sys; print(json.load(sys.stdin)["weights_in_strips"])'; }
greedy() { "$EDGELLM" run -m "$Q4" -p "Once upon a time" -n 24 --temp 0 "$@" 2>/dev/null; }
check "a copy made under a kernel without strips (EDGELLM_KERNEL=ref) keeps rows" [ "$(EDGELLM_KERNEL=ref in_strips --shm)" = False ]
q4_segments | xargs -r rm -f
runs() { EDGELLM_KERNEL=$1 "$EDGELLM" bench -m "$Q4" --no-shm -p 1 -n 1 -r 1 >/dev/null 2>&1; }
if runs avx2; then # the x86 variants with strips kernels: avx2, and avx512 where the CPU has it
    check "x86: a copy lays the matrices out in strips" [ "$(in_strips --shm)" = True ]
    ROWS_TEXT=$(greedy --no-shm)
    check "greedy text from strips is the file's" test -n "$ROWS_TEXT" -a "$(greedy)" = "$ROWS_TEXT"
    check "... also for a kernel without strips (EDGELLM_KERNEL=ref)" [ "$(EDGELLM_KERNEL=ref greedy)" = "$ROWS_TEXT" ]
    if runs avx512; then # the layout is the variants' common format: each reads the other's copy
        check "... and for AVX2 reading AVX-512's copy" [ "$(EDGELLM_KERNEL=avx2 greedy)" = "$ROWS_TEXT" ]
        q4_segments | xargs -r rm -f
        check "a copy made under EDGELLM_KERNEL=avx2 is in strips too" [ "$(EDGELLM_KERNEL=avx2 in_strips --shm)" = True ]
        check "... and AVX-512 reads it" [ "$(greedy)" = "$ROWS_TEXT" ]
    fi
else
    echo "SKIP: strips (no kernel with strips here: copies keep rows)"
fi
q4_segments | xargs -r rm -f

# ---- the daemon ------------------------------------------------------------------------------------
remove_segments
load_ms() { sed -n 's/.*loaded .* in \([0-9]*\) ms, weights from.*/\1/p' "$LOG" | tail -1; }
start_daemon cold --model "$M" --no-cache || exit 1
check "daemon, first start: copies the model into shared memory (cold)" \
    grep -q "weights from shared memory, copied now (cold)" "$LOG"
COLD=$(load_ms)
check "SIGTERM: exits 0" stop_daemon TERM
check "... and the copy outlives it" test "$(segments | grep -c .)" = 1
start_daemon warm --model "$M" --no-cache || exit 1
check "restarted: attaches to that copy (warm)" grep -q "weights from shared memory, attached (warm)" "$LOG"
WARM=$(load_ms)
echo "info: daemon model load: cold $COLD ms, warm $WARM ms ($(stat -c %s "$M") bytes)"
check "... which loads faster than the copy did" [ "${WARM:-99999}" -lt "${COLD:-0}" ]
check "/v1/status says where the weights come from" \
    status_json 200 "j['model']['weights_from'] == 'shared memory, attached (warm)'" "$URL/v1/status"
status_of "$URL/v1/completions" -d '{"prompt":"Hello","max_tokens":8}' >/dev/null # every weight page touched
# a run far longer than the measurement (which then kills it), whatever the decode speed:
# 1500 tokens outlasted a fixed 0.5 s wait until decode got faster
"$EDGELLM" run -m "$M" --shm -c 50000 -p "Once upon a time" -n 49000 --ignore-eos >/dev/null 2>"$TMP/run.err" &
RUN=$!
for _ in $(seq 100); do # until it maps more of the shared copy than the check's 1000 kB floor, at most 10 s
    sleep 0.1
    read -r R_RSS R_PSS R_SHM R_PSHM <<< "$(pss_of "$RUN" 2>/dev/null)"
    [ "${R_SHM:-0}" -gt 1000 ] && break
done
# shared pages are charged half to each process mapping them: Pss_Shmem about RssShmem / 2
read -r D_RSS D_PSS D_SHM D_PSHM <<< "$(pss_of "$PID")"
read -r R_RSS R_PSS R_SHM R_PSHM <<< "$(pss_of "$RUN")"
kill "$RUN" 2>/dev/null; wait "$RUN" 2>/dev/null
echo "info: daemon RSS ${D_RSS} kB, PSS ${D_PSS} kB (shared copy: RSS ${D_SHM} kB, PSS ${D_PSHM} kB);" \
     "edgellm run --shm RSS ${R_RSS} kB, PSS ${R_PSS} kB (shared copy: RSS ${R_SHM} kB, PSS ${R_PSHM} kB)"
check "daemon + edgellm run --shm: one copy, each charged about half of it" \
    bash -c "[ ${D_SHM:-0} -gt 1000 ] && [ ${R_SHM:-0} -gt 1000 ] &&
             [ \$(( ${D_PSHM:-0} * 4 )) -lt \$(( ${D_SHM:-0} * 3 )) ] && [ \$(( ${R_PSHM:-0} * 4 )) -lt \$(( ${R_SHM:-0} * 3 )) ]"
cp "$M" "$TMP/keep.gguf"
truncate -s 4096 "$M"
check "the model file truncated under a daemon serving the copy: nothing changes" \
    bash -c "[ \"\$(curl -s -m 60 -o /dev/null -w '%{http_code}' '$URL/v1/completions' -d '{\"prompt\":\"a\",\"max_tokens\":4}')\" = 200 ] &&
             [ \"\$(curl -s -m 10 -o /dev/null -w '%{http_code}' '$URL/health')\" = 200 ]"
check "SIGTERM: exits 0" stop_daemon TERM
cp "$TMP/keep.gguf" "$M"
remove_segments
start_daemon mapped --model "$M" --no-cache --no-shm || exit 1
check "--no-shm: the daemon maps the file" grep -q "weights from file mapping;" "$LOG"
check "... and makes no copy" test "$(segments | grep -c .)" = 0
check "SIGTERM: exits 0" stop_daemon TERM
head -c 100000 /dev/urandom > "$TMP/junk.gguf"
START_WAIT="cannot load" start_daemon junk --model "$TMP/junk.gguf" || exit 1
check "a file that is no model: refused, and its copy does not stay in memory" \
    bash -c "! for s in /dev/shm/edgellm-m2-*; do head -c 8192 \"\$s\" 2>/dev/null; done | grep -qaF '$(realpath "$TMP")/junk.gguf'"
check "SIGTERM: exits 0" stop_daemon TERM

finish
