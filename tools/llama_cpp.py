#!/usr/bin/env python3
"""llama_cpp.py — llama.cpp itself, for comparing edgellm with it: its speed on a GGUF file,
measured the way `edgellm bench` measures ours, and its own quantizer.

llama.cpp comes from npm: the libllama and ggml libraries that node-llama-cpp ships prebuilt
(release b6845 in node-llama-cpp 3.14.2), with a ggml CPU backend per x86 level that ggml picks
for this CPU at run time (on AVX-512 with VNNI, "icelake" or newer). They are called here
through ctypes, as llama-bench calls them: the calling thread decodes, with n-1 ggml workers.
(Through node-llama-cpp's JavaScript API, its event loop keeps a core busy while ggml's
threads decode: on 2 cores, decode ran at two thirds of its speed.) `make bench-llama`
installs the package into $(BUILD)/llama-cpp and passes that directory as --lib. Nothing of
it is linked into edgellm: this is the competitor, measured.

  tools/llama_cpp.py --lib DIR bench -m FILE.gguf [-t 2] [-p 64] [-n 32] [-r 1]
  tools/llama_cpp.py --lib DIR quantize IN.gguf OUT.gguf Q4_0|Q4_K_M|Q8_0

bench prints one line of JSON: {"llama_cpp", "backend", "threads", "pp_tps": [...],
"tg_tps": [...]}. After one warm-up decode, each repeat takes a fresh context, as `edgellm
bench` rewinds to an empty one: pp is p prompt tokens decoded in one batch, tg n single-token
decodes (no sampling, as llama-bench's tg).

Only a few fields of llama.cpp's parameter structs are set, the first ones of each, which
llama.h has kept in place since 2024; the structs themselves are passed as llama.cpp's
*_default_params return them, in buffers larger than they are (structs this size go in
memory on x86-64 and aarch64, so a larger buffer is only unread bytes).
"""
import argparse
import ctypes
import glob
import json
import os
import platform
import random
import re
import sys
import time

# llama.h's enum llama_ftype
FTYPES = {"Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15}


class ModelParams(ctypes.Structure):
    _fields_ = [("opaque", ctypes.c_uint8 * 1024)]


class ContextParams(ctypes.Structure):
    _fields_ = [("n_ctx", ctypes.c_uint32), ("n_batch", ctypes.c_uint32), ("n_ubatch", ctypes.c_uint32),
                ("n_seq_max", ctypes.c_uint32), ("n_threads", ctypes.c_int32), ("n_threads_batch", ctypes.c_int32),
                ("opaque", ctypes.c_uint8 * 1024)]


class QuantizeParams(ctypes.Structure):
    _fields_ = [("nthread", ctypes.c_int32), ("ftype", ctypes.c_int32), ("opaque", ctypes.c_uint8 * 1024)]


class Batch(ctypes.Structure):
    """llama_batch, exactly: it goes back to llama_decode by value."""
    _fields_ = [("n_tokens", ctypes.c_int32), ("token", ctypes.c_void_p), ("embd", ctypes.c_void_p),
                ("pos", ctypes.c_void_p), ("n_seq_id", ctypes.c_void_p), ("seq_id", ctypes.c_void_p),
                ("logits", ctypes.c_void_p)]


LOG_QUIET = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)(lambda level, text, user: None)


def load(lib_dir):
    """libllama from node-llama-cpp's prebuilt binaries under lib_dir, with ggml's CPU backends."""
    arch = {"x86_64": "x64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    bins = glob.glob(os.path.join(lib_dir, f"node_modules/@node-llama-cpp/linux-{arch}/bins/linux-{arch}/"))
    if not bins or not glob.glob(os.path.join(bins[0], "libllama*.so")):
        sys.exit(f"no libllama for linux-{arch} under {lib_dir}/node_modules/@node-llama-cpp")
    libs = {}
    for name, pattern in [("ggml-base", "libggml-base*.so"), ("ggml", "libggml.*so"), ("llama", "libllama*.so")]:
        libs[name] = ctypes.CDLL(glob.glob(os.path.join(bins[0], pattern))[0], mode=ctypes.RTLD_GLOBAL)
    ggml, llama = libs["ggml"], libs["llama"]
    llama.llama_log_set(LOG_QUIET, None)
    ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_load_all_from_path(bins[0].encode())
    llama.llama_backend_init()
    llama.llama_model_default_params.restype = ModelParams
    llama.llama_context_default_params.restype = ContextParams
    llama.llama_model_quantize_default_params.restype = QuantizeParams
    llama.llama_model_load_from_file.argtypes = [ctypes.c_char_p, ModelParams]
    llama.llama_model_load_from_file.restype = ctypes.c_void_p
    llama.llama_init_from_model.argtypes = [ctypes.c_void_p, ContextParams]
    llama.llama_init_from_model.restype = ctypes.c_void_p
    llama.llama_free.argtypes = [ctypes.c_void_p]
    llama.llama_model_free.argtypes = [ctypes.c_void_p]
    llama.llama_model_get_vocab.argtypes = [ctypes.c_void_p]
    llama.llama_model_get_vocab.restype = ctypes.c_void_p
    llama.llama_vocab_n_tokens.argtypes = [ctypes.c_void_p]
    llama.llama_batch_get_one.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    llama.llama_batch_get_one.restype = Batch
    llama.llama_decode.argtypes = [ctypes.c_void_p, Batch]
    llama.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(QuantizeParams)]
    llama.llama_model_quantize.restype = ctypes.c_uint32
    release = re.search(r"libllama\.(b\d+)\.so", glob.glob(os.path.join(bins[0], "libllama*.so"))[0])
    return llama, release.group(1) if release else "unknown"


def bench(llama, release, a):
    model = llama.llama_model_load_from_file(a.model.encode(), llama.llama_model_default_params())
    if not model:
        sys.exit(f"llama.cpp cannot load {a.model}")
    params = llama.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = a.prompt + a.gen + 16, a.prompt, a.prompt
    params.n_threads = params.n_threads_batch = a.threads
    n_vocab = llama.llama_vocab_n_tokens(llama.llama_model_get_vocab(model))
    rng = random.Random(12345)  # token ids past the first 100 (special ones), the same every run
    n_ids = max(a.prompt, a.gen)
    ids = (ctypes.c_int32 * n_ids)(*[rng.randrange(min(100, n_vocab - 1), n_vocab) for _ in range(n_ids)])

    def timed_decodes(tokens, count, per_call):
        """Seconds for `count` decodes of `per_call` tokens each, in a fresh context."""
        ctx = llama.llama_init_from_model(model, params)
        first = ctypes.addressof(tokens)
        start = time.perf_counter()
        for i in range(count):
            if llama.llama_decode(ctx, llama.llama_batch_get_one(first + 4 * i * per_call, per_call)):
                sys.exit("llama_decode failed")
        seconds = time.perf_counter() - start
        llama.llama_free(ctx)
        return seconds

    timed_decodes(ids, 1, 1)  # warm-up: first touches of the weights and buffers
    pp, tg = [], []
    for _ in range(a.repeats):
        pp.append(a.prompt / timed_decodes(ids, 1, a.prompt))
        tg.append(a.gen / timed_decodes(ids, a.gen, 1))
    backend = re.search(r"libggml-cpu-([\w-]+)\.so", open("/proc/self/maps").read())
    print(json.dumps({"llama_cpp": release, "backend": backend.group(1) if backend else "unknown",
                      "threads": a.threads, "pp_tps": pp, "tg_tps": tg}))
    llama.llama_model_free(model)


def quantize(llama, a):
    params = llama.llama_model_quantize_default_params()
    params.nthread = os.cpu_count() or 1
    params.ftype = FTYPES[a.type]
    if llama.llama_model_quantize(a.input.encode(), a.output.encode(), ctypes.byref(params)) != 0:
        sys.exit(f"llama_model_quantize failed for {a.input}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", required=True, help="directory with node_modules/node-llama-cpp")
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="prefill and decode t/s, as JSON")
    b.add_argument("-m", "--model", required=True)
    b.add_argument("-t", "--threads", type=int, default=2)
    b.add_argument("-p", "--prompt", type=int, default=64)
    b.add_argument("-n", "--gen", type=int, default=32)
    b.add_argument("-r", "--repeats", type=int, default=1)
    q = sub.add_parser("quantize", help="llama.cpp's quantizer")
    q.add_argument("input")
    q.add_argument("output")
    q.add_argument("type", choices=sorted(FTYPES))
    a = ap.parse_args()
    llama, release = load(a.lib)
    if a.command == "bench":
        bench(llama, release, a)
    else:
        quantize(llama, a)


if __name__ == "__main__":
    main()
