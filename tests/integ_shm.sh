#!/usr/bin/env bash
# integ_shm.sh — the CLI's use of the shared-memory model store (daemon/cli_engine.c): by
# default it only attaches to an existing copy and never makes one, --shm makes one (cold)
# that the next run attaches to (warm), --no-shm maps the file, --mlock needs the copy, and
# bench --pss runs two processes on one copy. Works on a private copy of a small model, and
# removes its segments however it ends.
. "$(dirname "$0")/daemon_lib.sh"

EDGELLM=$BUILD/edgellm
[ -x "$EDGELLM" ] || { echo "FAIL: $EDGELLM not built"; exit 1; }
M=$TMP/m.gguf
cp "$MODEL" "$M"

# segments /dev/shm/edgellm-m1-* whose header names $M (the path is in the first page)
segments() { for s in /dev/shm/edgellm-m1-*; do [ -e "$s" ] && head -c 8192 "$s" | grep -qaF "$M" && echo "$s"; done; }
remove_segments() { segments | xargs -r rm -f; }
trap 'remove_segments; cleanup' EXIT

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

finish
