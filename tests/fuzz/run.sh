#!/usr/bin/env bash
# run.sh — builds every libFuzzer harness (tests/fuzz/fuzz_<target>.c) with clang, ASan and
# UBSan, runs each in turn for FUZZ_SECONDS seconds (default 60) from its committed seed
# corpus, prints per harness its execution count and speed (libFuzzer's final stats), and
# exits non-zero if any harness found a crash, a leak, a timeout or a failed property.
#
#   tests/fuzz/run.sh                  every harness, 60 s each
#   FUZZ_SECONDS=300 tests/fuzz/run.sh tok utf8
#
# Environment: FUZZ_SECONDS; BUILD (default build-fuzz) holds the instrumented engine, the
# harness binaries and, per target, $BUILD/fuzz/<target>/: the log, the inputs the fuzzer
# added to the corpus (not committed: the committed seeds stay small) and any crash-*,
# leak-*, timeout-* input. SHARED: reference data, a relative path being taken from the
# repository root (default ../shared; the tok target loads its vocabs from there). CC:
# default clang (libFuzzer is clang's).
#
# A found input goes, once the bug is fixed, to tests/fuzz/regress/<target>/, where
# tests/test_fuzz_regress.c replays it in every `make test`.
#
# One harness at a time, each one process (libFuzzer's default, no -jobs/-workers): the
# machine's cores are shared.
set -euo pipefail
cd "$(dirname "$0")/../.."

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
BUILD=${BUILD:-build-fuzz}
CC=${CC:-clang}
SHARED=$(cd "${SHARED:-../shared}" && pwd)
export SHARED

if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for f in tests/fuzz/fuzz_*.c; do
        t=${f#tests/fuzz/fuzz_}
        targets+=("${t%.c}")
    done
fi

# (-Wno-unknown-warning-option: the Makefile's warning flags include gcc-only ones)
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -Wno-unknown-warning-option"
# The engine gets coverage instrumentation (fuzzer-no-link) so libFuzzer sees its branches;
# only the harness links libFuzzer's main.
# The API's parsers (the req and sse targets) live in libapi.a; linking pulls only the
# objects a harness uses (no HTTP server), with cJSON.
make --no-print-directory -s BUILD="$BUILD" CC="$CC" OPT=-O1 SAN="$SAN -fsanitize=fuzzer-no-link" \
    "$BUILD/libapi.a" "$BUILD/libengine.a"
CFLAGS=(-std=c11 -O1 -g -I. -D_GNU_SOURCE -Wall -Wextra -Wshadow $SAN -fsanitize=fuzzer $(pkg-config --cflags libcjson))
LIBS=($(pkg-config --libs libcjson libpcre2-8) -lpthread -lm)

# a leak fails the run like a crash; UBSan's findings stop it at the first one
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=()
printf '%-6s %12s %10s  %s\n' target executions exec/s result
for t in "${targets[@]}"; do
    src=tests/fuzz/fuzz_$t.c
    [ -f "$src" ] || { echo "no harness $src" >&2; exit 2; }
    out=$BUILD/fuzz/$t
    mkdir -p "$out/corpus"
    bin=$BUILD/fuzz/fuzz_$t
    "$CC" "${CFLAGS[@]}" "$src" tests/fuzz/targets.c "$BUILD/libapi.a" "$BUILD/libengine.a" "${LIBS[@]}" -o "$bin"

    args=(-max_total_time="$FUZZ_SECONDS" -print_final_stats=1 -timeout=30 -rss_limit_mb=4096
          -artifact_prefix="$out/")
    [ -f "tests/fuzz/$t.dict" ] && args+=(-dict="tests/fuzz/$t.dict")
    # the first corpus folder receives new inputs: the build's, never the committed seeds
    # libFuzzer exits non-zero on a crash, leak, timeout or out-of-memory, after saving
    # the input as $out/crash-*, leak-*, timeout-* or oom-*
    touch "$out/started"
    rc=0
    "$bin" "${args[@]}" "$out/corpus" "tests/fuzz/corpus/$t" >"$out/log" 2>&1 || rc=$?

    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/log" | tail -n 1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out/log" | tail -n 1)
    if [ "$rc" -ne 0 ]; then
        printf '%-6s %12s %10s  FAILED (exit %d)\n' "$t" "${execs:-?}" "${speed:-?}" "$rc"
        tail -n 40 "$out/log" | sed 's/^/    /'
        find "$out" -maxdepth 1 -newer "$out/started" -name '*-*' -type f | sed 's/^/    input: /'
        failed+=("$t")
    else
        printf '%-6s %12s %10s  ok\n' "$t" "${execs:-?}" "${speed:-?}"
    fi
done

# the closing line in the plain form CI reads
[ ${#failed[@]} -eq 0 ] || echo "failed harnesses: ${failed[*]}"
echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
