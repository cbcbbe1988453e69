#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/).

gguf: the seeds are tiny but complete: models the engine can open (a 2-layer llama with an SPM
vocab, a 2-layer qwen2 with a byte-level BPE vocab; 16-dim embeddings, 300 tokens), a
Q8_0/Q4_0 llama with 32-dim rows, vocab-only files for other pre-tokenizers, a file with
every metadata type, and broken variants (truncated, bit-flipped, wrong version) whose
error paths the fuzzer should start from, and the hostile corpus (hostile-*.gguf, see
hostile_seeds). Written independently of engine/gguf_write.c so
the reader is not only tested against its own writer.

tok, chat, utf8, req, sse: a handful of inputs in each target's input format (see targets.c).

Deterministic: re-running it rewrites the same bytes. Usage: tests/fuzz/gen_seeds.py
"""
import os
import random
import struct

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
              BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
T_F32, T_F16, T_Q4_0, T_Q8_0 = 0, 1, 2, 8


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    if t == STR:
        return gstr(v)
    if t == ARR:
        elem, items = v
        out = struct.pack("<IQ", elem, len(items))
        return out + b"".join(value(elem, x) for x in items)
    return struct.pack(SCALAR_FMT[t], v)


def q8_0_rows(vals):
    """Q8_0 blocks: f16 scale + 32 int8."""
    out = b""
    for i in range(0, len(vals), 32):
        blk = vals[i:i + 32]
        amax = max(abs(x) for x in blk) or 1.0
        d = amax / 127
        out += struct.pack("<e", d) + bytes((round(x / d) & 0xFF) for x in blk)
    return out


def q4_0_rows(vals):
    """Q4_0 blocks: f16 scale + 16 bytes of nibbles (low nibbles first half)."""
    out = b""
    for i in range(0, len(vals), 32):
        blk = vals[i:i + 32]
        amax = max(blk, key=abs) or 1.0
        d = amax / -8
        q = [min(15, max(0, int(x / d + 8.5))) for x in blk]
        out += struct.pack("<e", d) + bytes(q[j] | (q[j + 16] << 4) for j in range(16))
    return out


def tensor_bytes(ttype, vals):
    if ttype == T_F32:
        return struct.pack("<%df" % len(vals), *vals)
    if ttype == T_F16:
        return struct.pack("<%de" % len(vals), *vals)
    if ttype == T_Q8_0:
        return q8_0_rows(vals)
    if ttype == T_Q4_0:
        return q4_0_rows(vals)
    raise ValueError(ttype)


def gguf(kvs, tensors=(), version=3, align=32):
    """kvs: [(key, type, value)]; tensors: [(name, ttype, shape, values)]."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, t, v in kvs:
        out += gstr(key) + struct.pack("<I", t) + value(t, v)
    data, infos = b"", b""
    for name, ttype, shape, vals in tensors:
        data += b"\0" * (-len(data) % align)
        infos += gstr(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
        infos += struct.pack("<IQ", ttype, len(data))
        data += tensor_bytes(ttype, vals)
    out += infos
    out += b"\0" * (-len(out) % align)
    return out + data


def spm_vocab(n=300):
    """SentencePiece vocab: unk/bos/eos, 256 byte tokens, then scored pieces."""
    toks, types, scores = ["<unk>", "<s>", "</s>"], [2, 3, 3], [0.0, 0.0, 0.0]
    for b in range(256):
        toks.append("<0x%02X>" % b), types.append(6), scores.append(0.0)
    pieces = ["\u2581", "\u2581t", "he", "\u2581the", "\u2581a", "in", "er", "\u2581w", "on", "\u2581s",
              "an", "\u2581o", "re", "\u2581c", "ou", "\u2581h", "at", "it", "is", "en"]
    pieces += list("abcdefghijklmnopqrstu")
    for i, p in enumerate(pieces[:n - len(toks)]):
        toks.append(p), types.append(1), scores.append(-float(i))
    return [("tokenizer.ggml.model", STR, "llama"),
            ("tokenizer.ggml.tokens", ARR, (STR, toks)),
            ("tokenizer.ggml.scores", ARR, (F32, scores)),
            ("tokenizer.ggml.token_type", ARR, (I32, types)),
            ("tokenizer.ggml.bos_token_id", U32, 1),
            ("tokenizer.ggml.eos_token_id", U32, 2),
            ("tokenizer.ggml.unknown_token_id", U32, 0),
            ("tokenizer.ggml.add_bos_token", BOOL, True)], len(toks)


def gpt2_byte_map():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, k = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b), cs.append(256 + k)
            k += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def bpe_vocab(pre, n=300, specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>")):
    """Byte-level BPE vocab: the 256 byte symbols, merged tokens, then control tokens."""
    bm = gpt2_byte_map()
    toks = [bm[b] for b in range(256)]
    merges = []
    for a, b in [("\u0120", "t"), ("h", "e"), ("\u0120t", "he"), ("i", "n"), ("e", "r"), ("\u0120", "a"),
                 ("o", "n"), ("r", "e"), ("\u0120", "s"), ("a", "n"), ("\u0120", "w"), ("o", "u"),
                 ("i", "s"), ("e", "n"), ("a", "t"), ("\u0120", "c"), ("\u0120", "o"), ("i", "t"),
                 ("\u010a", "\u010a"), ("\u0120", "\u0120"), ("1", "2"), ("12", "3"), ("\u0120w", "or"),
                 ("o", "r"), ("\u0120wor", "ld"), ("l", "d"), ("\u0120", "h"), ("\u0120h", "e"),
                 ("l", "l"), ("\u0120he", "ll"), ("\u0120hell", "o")]:
        merges.append(a + " " + b)
        if a + b not in toks:
            toks.append(a + b)
    while len(toks) < n - len(specials):
        toks.append("<unused%d>" % len(toks))
    types = [1] * len(toks) + [3] * len(specials)
    toks += list(specials)
    return [("tokenizer.ggml.model", STR, "gpt2"),
            ("tokenizer.ggml.pre", STR, pre),
            ("tokenizer.ggml.tokens", ARR, (STR, toks)),
            ("tokenizer.ggml.token_type", ARR, (I32, types)),
            ("tokenizer.ggml.merges", ARR, (STR, merges)),
            ("tokenizer.ggml.bos_token_id", U32, len(toks) - 3),
            ("tokenizer.ggml.eos_token_id", U32, len(toks) - 3)], len(toks)


def model(arch, vocab, n_vocab, types, n_embd=16, n_layer=2, n_head=2, n_head_kv=1, n_ff=32, tied=False,
          bias=False, seed=1, override=None):
    """A random-weight model in GGUF; types: (matrix type, embedding type). override: {key:
    (type, value)} replaces (or, for a key not there, adds) metadata entries."""
    rng = random.Random(seed)
    mat_t, emb_t = types
    head_dim = n_embd // n_head
    kv = n_head_kv * head_dim

    def w(*shape):
        size = 1
        for d in shape:
            size *= d
        return [rng.gauss(0, 0.05) for _ in range(size)]

    tensors = [("token_embd.weight", emb_t, (n_embd, n_vocab), w(n_embd, n_vocab)),
               ("output_norm.weight", T_F32, (n_embd,), [1.0] * n_embd)]
    if not tied:
        tensors.append(("output.weight", emb_t, (n_embd, n_vocab), w(n_embd, n_vocab)))
    for i in range(n_layer):
        p = "blk.%d." % i
        tensors += [(p + "attn_norm.weight", T_F32, (n_embd,), [1.0] * n_embd),
                    (p + "attn_q.weight", mat_t, (n_embd, n_embd), w(n_embd, n_embd)),
                    (p + "attn_k.weight", mat_t, (n_embd, kv), w(n_embd, kv)),
                    (p + "attn_v.weight", mat_t, (n_embd, kv), w(n_embd, kv))]
        if bias:
            tensors += [(p + "attn_q.bias", T_F32, (n_embd,), w(n_embd)),
                        (p + "attn_k.bias", T_F32, (kv,), w(kv)),
                        (p + "attn_v.bias", T_F32, (kv,), w(kv))]
        tensors += [(p + "attn_output.weight", mat_t, (n_embd, n_embd), w(n_embd, n_embd)),
                    (p + "ffn_norm.weight", T_F32, (n_embd,), [1.0] * n_embd),
                    (p + "ffn_gate.weight", mat_t, (n_embd, n_ff), w(n_embd, n_ff)),
                    (p + "ffn_up.weight", mat_t, (n_embd, n_ff), w(n_embd, n_ff)),
                    (p + "ffn_down.weight", mat_t, (n_ff, n_embd), w(n_ff, n_embd))]
    kvs = [("general.architecture", STR, arch), ("general.name", STR, "fuzz-seed-" + arch),
           (arch + ".context_length", U32, 64), (arch + ".embedding_length", U32, n_embd),
           (arch + ".block_count", U32, n_layer), (arch + ".feed_forward_length", U32, n_ff),
           (arch + ".attention.head_count", U32, n_head), (arch + ".attention.head_count_kv", U32, n_head_kv),
           (arch + ".attention.layer_norm_rms_epsilon", F32, 1e-5), (arch + ".rope.freq_base", F32, 10000.0)]
    kvs += vocab
    for key, (t, v) in (override or {}).items():
        kvs = [kv for kv in kvs if kv[0] != key] + [(key, t, v)]
    return gguf(kvs, tensors)


def all_types():
    """Header only: one entry of every scalar type and an array of each element type."""
    kvs = [("u8", U8, 200), ("i8", I8, -5), ("u16", U16, 60000), ("i16", I16, -300), ("u32", U32, 4000000000),
           ("i32", I32, -70000), ("f32", F32, 0.5), ("bool", BOOL, True), ("str", STR, "h\u00e9llo"),
           ("u64", U64, 2 ** 63), ("i64", I64, -2 ** 40), ("f64", F64, 1e300),
           ("general.alignment", U32, 64), ("tokenizer.chat_template", STR, "{{ '<|im_start|>' }}")]
    for t in (U8, I8, U16, I16, U32, I32, F32, BOOL, U64, I64, F64):
        kvs.append(("arr." + str(t), ARR, (t, [1, 0, 1])))
    kvs.append(("arr.str", ARR, (STR, ["", "a", "\u2581b"])))
    return gguf(kvs, [("t", T_F32, (2, 3), [1, 2, 3, 4, 5, 6])], align=64)


def flip(data, seed, n=4):
    rng = random.Random(seed)
    b = bytearray(data)
    for _ in range(n):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def gguf_seeds():
    spm, n_spm = spm_vocab()
    qwen, n_qwen = bpe_vocab("qwen2")
    seeds = {
        "llama-spm-f32": model("llama", spm, n_spm, (T_F32, T_F32)),
        "qwen2-bpe-f16": model("qwen2", qwen, n_qwen, (T_F16, T_F16), tied=True, bias=True, seed=2),
        "llama-spm-q8q4": model("llama", spm, n_spm, (T_Q4_0, T_Q8_0), n_embd=32, n_ff=64, seed=3),
        "vocab-llama-bpe": gguf(bpe_vocab("llama-bpe")[0]),
        "vocab-deepseek-llm": gguf(bpe_vocab("deepseek-llm")[0]),
        "vocab-gpt2-default": gguf(bpe_vocab("default")[0]),
        "all-types": all_types(),
        "llama-spm-tiny-f16": small_llama(),
    }
    seeds["v2-all-types"] = seeds["all-types"][:4] + struct.pack("<I", 2) + seeds["all-types"][8:]
    full = seeds["llama-spm-f32"]
    seeds["llama-truncated-header"] = full[:len(full) // 8]
    seeds["llama-truncated-data"] = full[:len(full) - 100]
    seeds["llama-bitflip"] = flip(full, 1)
    seeds["qwen2-bitflip"] = flip(seeds["qwen2-bpe-f16"], 2)
    return {name + ".gguf": data for name, data in seeds.items()}


# ---- hostile files: the classes of llama.cpp/ggml advisories, each of which the engine must
# refuse with a message (tests/test_gguf_hostile.c says where and how). They are gguf seeds
# too, so the fuzzer starts from every error path.

def header(n_tensors, n_kv, version=3):
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def tensor_info(name, ne, ttype=T_F32, offset=0, n_dims=None):
    n_dims = len(ne) if n_dims is None else n_dims
    return gstr(name) + struct.pack("<I", n_dims) + b"".join(struct.pack("<Q", d) for d in ne) + \
        struct.pack("<IQ", ttype, offset)


def one_tensor_file(info, data=b"\0" * 64, kvs=b"", n_kv=0):
    out = header(1, n_kv) + kvs + info
    return out + b"\0" * (-len(out) % 32) + data


def kv(key, t, v):
    return gstr(key) + struct.pack("<I", t) + value(t, v)


def small_llama(override=None, vocab_edit=None):
    """A 1-layer llama, 8-dim, F16, over the SPM vocab; vocab_edit(kvs) may change the vocab."""
    vocab, n = spm_vocab(260)
    if vocab_edit:
        vocab = vocab_edit(vocab)
    return model("llama", vocab, n, (T_F16, T_F16), n_embd=8, n_layer=1, n_head=2, n_head_kv=1, n_ff=16,
                 tied=True, seed=7, override=override)


def edit_tokens(fn):
    """A vocab_edit that passes the token list (and types) through fn(toks, types)."""
    def edit(vocab):
        out = []
        d = {k: (t, v) for k, t, v in vocab}
        toks, types = list(d["tokenizer.ggml.tokens"][1][1]), list(d["tokenizer.ggml.token_type"][1][1])
        fn(toks, types)
        for k, t, v in vocab:
            if k == "tokenizer.ggml.tokens":
                v = (STR, toks)
            elif k == "tokenizer.ggml.token_type":
                v = (I32, types)
            out.append((k, t, v))
        return out
    return edit


def retype(key, t, v):
    """A vocab_edit that replaces key's entry by one of another type."""
    return lambda vocab: [(k, t, v) if k == key else (k, kt, kv_) for k, kt, kv_ in vocab]


def set_token(i, text):
    def fn(toks, types):
        toks[i] = text
    return fn


def hostile_seeds():
    big = 0xFFFFFFFFFFFFFFFF
    seeds = {
        # wrapped size arithmetic: the element count, the byte count, n_dims
        "ne-product-wraps": one_tensor_file(tensor_info("t", [1 << 32, 1 << 32, 16])),
        "ne-bytes-wrap": one_tensor_file(tensor_info("t", [1 << 62])),
        "ne-negative": one_tensor_file(tensor_info("t", [big, 1])),
        "n-dims-huge": one_tensor_file(tensor_info("t", [4, 4], n_dims=0x80000000)),
        # offsets past the end, and an offset whose end wraps past 2^64
        "offset-past-eof": one_tensor_file(tensor_info("t", [16], offset=1 << 40)),
        "offset-wraps": one_tensor_file(tensor_info("t", [16], offset=(1 << 64) - 32)),
        # alignment: zero (a division by zero), not a power of two, and one so large that
        # rounding the header up wraps 32-bit arithmetic
        "alignment-zero": one_tensor_file(tensor_info("t", [16]), kvs=kv("general.alignment", U32, 0), n_kv=1),
        "alignment-wraps": one_tensor_file(tensor_info("t", [16]), kvs=kv("general.alignment", U32, 1 << 31),
                                           n_kv=1),
        "alignment-odd": one_tensor_file(tensor_info("t", [16]), kvs=kv("general.alignment", U32, 48), n_kv=1),
        # huge string and array lengths, and counts
        "string-length-huge": header(0, 1) + struct.pack("<Q", big) + b"general.name",
        "array-length-huge": header(0, 1) + gstr("a") + struct.pack("<IIQ", ARR, U64, 1 << 61) + b"\0" * 64,
        "string-array-length-huge": header(0, 1) + gstr("tokenizer.ggml.tokens") +
                                    struct.pack("<IIQ", ARR, STR, 1 << 60) + gstr("a") * 4,
        "kv-count-huge": header(0, 1 << 62) + kv("a", U32, 1),
        "tensor-count-huge": header(1 << 61, 0) + tensor_info("t", [16]),
        # tokenizer arrays of the wrong type, or not arrays
        "tokens-not-strings": small_llama(vocab_edit=retype("tokenizer.ggml.tokens", ARR, (U32, list(range(260))))),
        "tokens-scalar": small_llama(vocab_edit=retype("tokenizer.ggml.tokens", STR, "<unk>")),
        "scores-strings": small_llama(vocab_edit=retype("tokenizer.ggml.scores", ARR, (STR, ["0"] * 260))),
        "token-type-f32": small_llama(vocab_edit=retype("tokenizer.ggml.token_type", ARR, (F32, [1.0] * 260))),
        "token-type-short": small_llama(vocab_edit=retype("tokenizer.ggml.token_type", ARR, (I32, [1] * 10))),
        "bos-id-string": small_llama(vocab_edit=retype("tokenizer.ggml.bos_token_id", STR, "1")),
        "bos-id-out-of-range": small_llama(vocab_edit=retype("tokenizer.ggml.bos_token_id", U32, 0xFFFFFFFF)),
        "tokenizer-model-unknown": small_llama(vocab_edit=retype("tokenizer.ggml.model", STR, "wordpiece")),
        "duplicate-token": small_llama(vocab_edit=edit_tokens(set_token(259, "<s>"))),
        # byte tokens (type 6) that are not <0xHH>: not hex, three digits, a sign, short
        "byte-token-not-hex": small_llama(vocab_edit=edit_tokens(set_token(3 + 0x41, "<0xZZ>"))),
        "byte-token-0x100": small_llama(vocab_edit=edit_tokens(set_token(3 + 0x41, "<0x100>"))),
        "byte-token-negative": small_llama(vocab_edit=edit_tokens(set_token(3 + 0x41, "<0x-1>"))),
        "byte-token-short": small_llama(vocab_edit=edit_tokens(set_token(3 + 0x41, "<0x>"))),
        "byte-token-empty": small_llama(vocab_edit=edit_tokens(set_token(3 + 0x41, ""))),
        # hyper-parameters that do not match the tensors, or cannot be
        "block-count-too-large": small_llama(override={"llama.block_count": (U32, 1024)}),
        "block-count-huge": small_llama(override={"llama.block_count": (U32, 0xFFFFFFFF)}),
        "block-count-negative": small_llama(override={"llama.block_count": (I32, -1)}),
        "head-count-zero": small_llama(override={"llama.attention.head_count": (U32, 0)}),
        "head-count-kv-odd": small_llama(override={"llama.attention.head_count_kv": (U32, 3)}),
        "embedding-length-mismatch": small_llama(override={"llama.embedding_length": (U32, 16)}),
        "rms-eps-nan": small_llama(override={"llama.attention.layer_norm_rms_epsilon": (F32, float("nan"))}),
    }
    # the vocab says 261 tokens, the embedding has rows for 260
    seeds["vocab-embedding-mismatch"] = small_llama(
        vocab_edit=lambda v: edit_tokens(lambda toks, types: (toks.append("extra"), types.append(1)))(
            retype("tokenizer.ggml.scores", ARR, (F32, [0.0] * 261))(v)))
    return {"hostile-" + name + ".gguf": data for name, data in seeds.items()}


# tok: byte 0 picks the vocab (0 llama-spm, 1 gpt-2, 2 gpt-2-pre-qwen2, 3 deepseek-llm) and,
# with 0x80, special-token parsing; the rest is the text.
TOK_TEXTS = {
    "plain": "Hello world! It's 2024, isn't it?  Tabs\tand\nnew lines\r\n",
    "unicode": "h\u00e9llo w\u00f6rld \u4e2d\u6587 \u0440\u0443\u0441 \U0001F600 \u2581x \u00a0\u3000 \u0394\u03b4",
    "specials": "<s>[INST] hi [/INST]</s><|im_start|>user\n<|im_end|><|endoftext|><unk> <|fim_prefix|>",
    "digits": "1 12 123 1234 12345 3.14159 \u0661\u0662\u0663 \uff11\uff12",
    "code": "def f(x):\n    return x  # comment\n\n\n\tif (a&&b) { c->d[0] = 'e'; }",
}


def tok_seeds():
    seeds = {}
    for name, text in TOK_TEXTS.items():
        for sel, vocab in enumerate(("spm", "gpt2", "qwen2", "deepseek")):
            for special in (0, 0x80):
                tag = "%s-%s%s" % (name, vocab, "-special" if special else "")
                seeds[tag] = bytes([sel | special]) + text.encode()
    seeds["broken-utf8-spm"] = b"\x00ab\xc3(\xe2\x82 \xf0\x9f\x98 \xff\xfe \xed\xa0\x80 \xc0\xaf"
    seeds["broken-utf8-gpt2"] = b"\x01" + seeds["broken-utf8-spm"][1:]
    return seeds


# chat: byte 0 bit 0 is add_assistant; then NUL-separated fields, each a role byte
# (0 system, 1 user, 2 assistant, 3: the rest of the field is the role) and the content.
def chat(add_assistant, *msgs):
    return bytes([add_assistant]) + b"\0".join(bytes([r]) + c.encode() for r, c in msgs)


def chat_seeds():
    return {
        "conversation": chat(1, (0, "You are terse."), (1, "Hi!"), (2, " Hello. "), (1, "Bye\n")),
        "system-only": chat(0, (0, "  system text  "), (0, "second")),
        "strip-unicode": chat(1, (1, "\u00a0\u3000 x \u2028"), (2, "\t\n")),
        "unknown-role": chat(1, (3, "tool"), (1, "x")),
        "tags-in-content": chat(1, (1, "<|im_start|>[INST]<<SYS>>"), (2, "</s><end_of_turn>")),
        "template-chatml": b"\x01{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}",
        "template-llama3": b"\x00<|start_header_id|>user<|end_header_id|>\n\n{{ c }}<|eot_id|>",
        "template-mistral": b"\x00{{ '[INST] ' + m['content'] + ' [/INST]' }}<<SYS>>",
        "template-gemma": b"\x01<start_of_turn>user\n{{ c }}<end_of_turn>",
    }


def utf8_seeds():
    return {
        "valid": "a\u00e9\u4e2d\U0001F600\u2581\uffff\U0010ffff".encode(),
        "boundaries": b"\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xf0\x90\x80\x80\xf4\x8f\xbf\xbf",
        "ill-formed": b"\xc0\xaf\xe0\x80\xaf\xed\xa0\x80\xf4\x90\x80\x80\xf5\xff\x80",
        "truncated": b"ab\xe2\x82",
        "byte-map": bytes(range(256)),
    }


# req: byte 0 picks the route (0 chat, 1 completions, 2 tokenize, 3 detokenize); the rest
# is the body.
def req_seeds():
    chat, comp, tok, detok = b"\x00", b"\x01", b"\x02", b"\x03"
    return {
        "chat-minimal": chat + b'{"messages":[{"role":"user","content":"Hi"}]}',
        "chat-every-field": chat + b'{"model":"m","messages":[{"role":"system","content":"Be brief."},'
                            b'{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],'
                            b'"max_tokens":12,"temperature":0.7,"top_p":0.9,"top_k":40,"min_p":0.05,'
                            b'"repeat_penalty":1.1,"presence_penalty":0.5,"frequency_penalty":-0.5,"seed":42,'
                            b'"n":1,"timeout":30,"stream":true,"stream_options":{"include_usage":true},'
                            b'"stop":["\\n\\n","END"],"edgellm":{"route":"local"}}',
        "chat-nulls-and-unknowns": chat + b'{"messages":[{"role":"user","content":null}],"max_tokens":null,'
                                   b'"logprobs":true,"n_probs":1000000,"tools":[{"x":{}}]}',
        "chat-out-of-range": chat + b'{"messages":[{"role":"user","content":"x"}],"max_tokens":1e300,'
                             b'"top_k":-1,"temperature":1e400,"seed":-9007199254740993}',
        "chat-deep": chat + b'{"messages":' + b"[" * 200 + b"]" * 200 + b"}",
        "chat-escapes": chat + b'{"messages":[{"role":"user","content":"\\u0000\\ud83d\\ude00\\ud800 \xff\xc3("}]}',
        "completion-array-prompt": comp + b'{"prompt":["Once upon"],"max_completion_tokens":5,"stop":"x"}',
        "completion-bad-types": comp + b'{"prompt":1,"stream":"yes","stop":[1,2,3,4,5]}',
        "completion-route-cloud": comp + b'{"prompt":"p","edgellm":{"route":"clod"},"timeout":0}',
        "tokenize": tok + b'{"content":"Hello world","add_special":true,"parse_special":false,"with_pieces":true}',
        "tokenize-missing": tok + b'{"contents":"x"}',
        "detokenize": detok + b'{"tokens":[1,2,3,50256,2147483647]}',
        "detokenize-bad": detok + b'{"tokens":[-1,1.5,2147483648,"7",null]}',
        "not-json": comp + b'{"prompt":"unterminated',
    }


# sse: byte 0 flags (bit 0 chat, bit 1 include_usage, bits 2-3: 0 stop, 1 length, 2 error,
# 3 cancelled), byte 1 the model id's length, byte 2 the chunking seed (odd: long chunks),
# then the model id, then the text.
def sse(flags, seed, model, text):
    m = model.encode() if isinstance(model, str) else model
    t = text.encode() if isinstance(text, str) else text
    return bytes([flags, len(m), seed]) + m + t


def sse_seeds():
    long_text = ("\u00e9t\u00e9 \u4e2d\u6587 \U0001F600 " * 150)
    return {
        "chat-plain": sse(0b0001, 2, "qwen2-gpt2", "Hello, world!"),
        "text-usage": sse(0b0010, 4, "m", "Once upon a time"),
        "chat-long-multibyte": sse(0b0011, 3, "qwen2", long_text),
        "text-long-multibyte-length": sse(0b0100, 5, "x", long_text),
        "ill-formed": sse(0b0001, 6, "m", b"ok \xff\xfe \xc3( \xe2\x82 \xf0\x9f\x98 \xed\xa0\x80 end\xe2"),
        "escapes": sse(0b0000, 8, "m", "quote \" backslash \\ nl \n cr \r tab \t nul \0 bell \x07 del \x7f"),
        "error": sse(0b1000, 1, "m", "partial answer \xe2\x82"),
        "cancelled": sse(0b1101, 7, "m", "cut off here"),
        "model-long": sse(0b0001, 9, "\u00e9" * 100 + "\"\\", "text"),
        "model-broken": sse(0b0000, 10, b"m\xff\xc3\x00hidden", "text"),
        "empty": sse(0b0011, 12, "", ""),
    }


def main():
    for target, seeds in (("gguf", {**gguf_seeds(), **hostile_seeds()}), ("tok", tok_seeds()), ("chat", chat_seeds()),
                          ("utf8", utf8_seeds()), ("req", req_seeds()), ("sse", sse_seeds())):
        out = os.path.join(CORPUS, target)
        os.makedirs(out, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(out, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
