#!/usr/bin/env python3
"""llama_cpp_quantize.py — quantize a GGUF file with llama.cpp's own quantizer.

`make bench-llama` benchmarks files that llama.cpp quantized beside the ones edgellm's mkmodel
wrote, to show that edgellm reads other tools' files at the same speed. llama.cpp's quantizer is
`llama_model_quantize` in the libllama that node-llama-cpp's prebuilt binaries ship (there is no
llama-quantize program in that package), called here through ctypes.

  tools/llama_cpp_quantize.py --lib DIR IN.gguf OUT.gguf Q4_0|Q4_K_M|Q8_0

DIR holds node_modules/node-llama-cpp (as for tools/llama_cpp_bench.mjs). IN is usually F16.
"""
import argparse
import ctypes
import glob
import os
import sys

# llama.h's enum llama_ftype
FTYPES = {"Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15}


class QuantizeParams(ctypes.Structure):
    """llama_model_quantize_params: its first two fields, which every release since 2023 keeps
    first (nthread, ftype), and room for the rest, which this script leaves at the defaults
    llama_model_quantize_default_params returns (a struct returned in memory, so a larger
    buffer here is safe)."""
    _fields_ = [("nthread", ctypes.c_int32), ("ftype", ctypes.c_int32), ("rest", ctypes.c_uint8 * 504)]


LOG_QUIET = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)(lambda level, text, user: None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", required=True, help="directory with node_modules/node-llama-cpp")
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("type", choices=sorted(FTYPES))
    a = ap.parse_args()
    bins = glob.glob(os.path.join(a.lib, "node_modules/@node-llama-cpp/linux-*/bins/linux-*/"))
    bins = [b for b in bins if glob.glob(os.path.join(b, "libllama*.so"))]
    if not bins:
        sys.exit(f"no libllama under {a.lib}/node_modules/@node-llama-cpp")
    # libllama needs ggml's libraries loaded first (they sit beside it, not on the search path)
    for pattern in ["libggml-base*.so", "libggml.*so", "libllama*.so"]:
        lib = ctypes.CDLL(glob.glob(os.path.join(bins[0], pattern))[0], mode=ctypes.RTLD_GLOBAL)
    lib.llama_model_quantize_default_params.restype = QuantizeParams
    lib.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(QuantizeParams)]
    lib.llama_model_quantize.restype = ctypes.c_uint32
    lib.llama_log_set(LOG_QUIET, None)  # not a line per tensor
    lib.llama_backend_init()
    params = lib.llama_model_quantize_default_params()
    params.nthread = os.cpu_count() or 1
    params.ftype = FTYPES[a.type]
    if lib.llama_model_quantize(a.input.encode(), a.output.encode(), ctypes.byref(params)) != 0:
        sys.exit(f"llama_model_quantize failed for {a.input}")


if __name__ == "__main__":
    main()
