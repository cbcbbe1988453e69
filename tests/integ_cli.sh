#!/usr/bin/env bash
# integ_cli — the `edgellm` command line as other tools use it: tokenize reads stdin byte for
# byte (checked against every llama.cpp vector file), logits prints one JSON object per
# position matching the reference, run/info/mkmodel behave, and bad input gives a clear error
# and the documented exit status.
source "$(dirname "$0")/daemon_lib.sh"
EDGELLM=$BUILD/edgellm
M=$SHARED/models

# tokenize: every test string of every vocab file, piped through the CLI exactly as stored
python3 - "$EDGELLM" "$SHARED/tokenizer" >"$TMP/tok.out" <<'PY'
import glob, os, subprocess, sys
exe, d = sys.argv[1], sys.argv[2]
bad = total = 0
for inp in sorted(glob.glob(os.path.join(d, "*.gguf.inp"))):
    vocab = inp[:-4]
    texts = open(inp, "rb").read().split(b"\n__ggml_vocab_test__\n")
    want = open(vocab + ".out", "rb").read().decode().split("\n")
    for i, t in enumerate(texts[: len(want)]):
        if i == len(texts) - 1 and t.endswith(b"\n"):
            t = t[:-1]  # the file's final newline is not part of the last string
        r = subprocess.run([exe, "tokenize", "-m", vocab, "--no-bos"], input=t, capture_output=True)
        total += 1
        if r.returncode != 0 or r.stdout.decode().split() != want[i].split():
            bad += 1
            print("mismatch", os.path.basename(vocab), i, r.stdout[:80], r.stderr[:200])
print(f"tokenize: {total - bad}/{total} strings match")
PY
check "tokenize: every vocab test string matches llama.cpp through stdin" grep -q "match" "$TMP/tok.out"
grep -v "^mismatch" "$TMP/tok.out"
check "tokenize: no mismatches" sh -c "! grep -q '^mismatch' '$TMP/tok.out'"
out=$(printf 'Hello world' | "$EDGELLM" tokenize -m "$M/llama-spm.q8_0.gguf")
check "tokenize: BOS added when the vocab asks" test "$out" = "1 15043 3186"
out=$(printf 'Hello world' | "$EDGELLM" tokenize -m "$M/llama-spm.q8_0.gguf" --no-bos)
check "tokenize: --no-bos" test "$out" = "15043 3186"

# logits: the reference's first prompt, teacher-forced; top-1 ids must match where clear
python3 - "$EDGELLM" "$M/llama-spm.q8_0" <<'PY' >"$TMP/logits.out" 2>&1
import json, subprocess, sys
exe, base = sys.argv[1], sys.argv[2]
ref = json.load(open(base + ".ref0.json"))
toks = ref["prompt_tokens"] + ref["greedy_tokens"]
r = subprocess.run([exe, "logits", "-m", base + ".gguf", "--tokens", ",".join(map(str, toks)), "--top", "5"],
                   capture_output=True, text=True, check=True)
rows = [json.loads(l) for l in r.stdout.splitlines()]
assert len(rows) == len(toks), (len(rows), len(toks))
for i, (mine, want) in enumerate(zip(rows, ref["rows"])):
    assert mine["pos"] == i and len(mine["top_ids"]) == 5 == len(mine["top_logits"])
    assert mine["top_logits"] == sorted(mine["top_logits"], reverse=True)
    gap = want["top_logits"][0] - want["top_logits"][1]
    if gap > 0.5 * want["std"]:
        assert mine["top_ids"][0] == want["top_ids"][0], (i, mine["top_ids"][0], want["top_ids"][0])
print("ok")
PY
check "logits: one JSON object per position, top-1 as llama.cpp" grep -qx ok "$TMP/logits.out"

# run: greedy is deterministic, -n bounds the length, stats go to stderr only
a=$("$EDGELLM" run -m "$M/llama-spm.q4_k_m.gguf" -p "Once upon a time" -n 12 --temp 0 2>"$TMP/run.err")
b=$("$EDGELLM" run -m "$M/llama-spm.q4_k_m.gguf" -p "Once upon a time" -n 12 --temp 0 2>/dev/null)
check "run: greedy output is deterministic" test "$a" = "$b"
check "run: echoes the prompt, then generates" sh -c "case '$a' in 'Once upon a time'?*) true;; *) false;; esac"
check "run: stats on stderr" grep -q "generated: 12 tokens" "$TMP/run.err"
"$EDGELLM" run -m "$M/qwen2-gpt2.q4_k_m.gguf" -p "Hi" -n 4 --chat --chat-template chatml >/dev/null 2>"$TMP/chat.err"
check "run --chat with a template override" grep -q "generated:" "$TMP/chat.err"

# bench: llama-bench's measures, also after a context of -d tokens
"$EDGELLM" bench -m "$M/llama-spm.q4_0.gguf" -p 8 -n 4 -d 16 -r 2 --json >"$TMP/bench.json" 2>&1
check "bench -d: JSON with the depth and both speeds" python3 -c "
import json, sys
b = json.load(open(sys.argv[1]))
assert b['n_depth'] == 16 and b['n_prompt'] == 8 and b['n_gen'] == 4, b
assert b['pp_tps']['min'] > 0 and b['tg_tps']['min'] > 0, b" "$TMP/bench.json"
"$EDGELLM" bench -m "$M/llama-spm.q4_0.gguf" -p 8 -n 4 -d 16 -r 1 >"$TMP/bench.txt" 2>&1
check "bench -d: tests named as llama-bench names them" grep -q "^tg4 @ d16 " "$TMP/bench.txt"
"$EDGELLM" bench -m "$M/llama-spm.q4_0.gguf" -d -1 2>/dev/null; rc=$?
check "bench -d -1: usage error (exit 2)" test $rc -eq 2

# info and mkmodel
"$EDGELLM" mkmodel --shape demo --type Q4_K_M -o "$TMP/demo.gguf" --seed 5 >/dev/null
"$EDGELLM" info -m "$TMP/demo.gguf" >"$TMP/info.out"
check "mkmodel + info: the name says the weights are random" grep -q "random weights" "$TMP/info.out"
check "info: architecture and tokenizer" sh -c "grep -q 'architecture: llama' '$TMP/info.out' && grep -q 'byte-level BPE' '$TMP/info.out'"
cmp -s <("$EDGELLM" mkmodel --shape demo --type Q4_K_M -o "$TMP/demo2.gguf" --seed 5 >/dev/null; cat "$TMP/demo2.gguf") "$TMP/demo.gguf"
check "mkmodel: same seed, same bytes" test $? -eq 0

# errors: clear message, exit 1 for a bad file, 2 for bad usage
head -c 100000 "$M/llama-spm.q4_0.gguf" >"$TMP/trunc.gguf"
"$EDGELLM" run -m "$TMP/trunc.gguf" -p x 2>"$TMP/err.out"; rc=$?
check "truncated GGUF: exit 1" test $rc -eq 1
check "truncated GGUF: the message names the problem" grep -q "past the end of the file\|bytes left" "$TMP/err.out"
"$EDGELLM" run -m /nonexistent.gguf -p x 2>"$TMP/err.out"; rc=$?
check "missing file: exit 1 naming it" sh -c "test $rc -eq 1 && grep -q /nonexistent.gguf '$TMP/err.out'"
"$EDGELLM" logits -m "$M/llama-spm.q4_0.gguf" --tokens 1,x 2>/dev/null; rc=$?
check "bad --tokens: usage error (exit 2)" test $rc -eq 2
"$EDGELLM" logits -m "$M/llama-spm.q4_0.gguf" --tokens 1,99999 2>"$TMP/err.out"; rc=$?
check "token id out of range: exit 1 naming it" sh -c "test $rc -eq 1 && grep -q 99999 '$TMP/err.out'"
"$EDGELLM" frobnicate 2>/dev/null; rc=$?
check "unknown command: exit 2" test $rc -eq 2

finish
