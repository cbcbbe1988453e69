#!/usr/bin/env python3
"""vs_llama_cpp.py — edgellm against llama.cpp on the same GGUF files, side by side.

For each file, R rounds. A round runs `edgellm bench` once (weights from the shared copy, as
the daemon reads them, and the read-bandwidth probe) and llama.cpp once
(tools/llama_cpp.py bench), one right after the other, in alternating order, so that both
meet the same memory phase: this machine's bandwidth can change by half within seconds, so
only ratios taken within one round compare.
Prints each round (the bandwidth probed after edgellm's decode; edgellm / llama.cpp t/s), then
per file the medians (min-max) of prefill and decode t/s of both, of the per-round ratios
edgellm / llama.cpp, and of the share of the round's bandwidth ceiling each decode reached.

  tools/vs_llama_cpp.py --lib DIR [-t 2] [-p 64] [-n 32] [-r 5] [--no-shm] FILE.gguf...

--no-shm has edgellm map the file instead of its shared copy: the file's rows in 4 KiB pages of
the page cache, without the shared copy's layout (strips) and 2 MiB pages.

DIR holds node-llama-cpp (`npm install --prefix DIR node-llama-cpp`), whose prebuilt llama.cpp
libraries tools/llama_cpp.py calls; `make bench-llama` sets it up and runs this on `make bench`'s
files and on the same shapes quantized by llama.cpp.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run_json(cmd):
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def spread(values, fmt="{:.1f}"):
    return (fmt + " ({}-{})").format(statistics.median(values), fmt.format(min(values)), fmt.format(max(values)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", required=True, help="directory with node_modules/node-llama-cpp")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-p", "--prompt", type=int, default=64)
    ap.add_argument("-n", "--gen", type=int, default=32)
    ap.add_argument("-r", "--rounds", type=int, default=5)
    ap.add_argument("--no-shm", action="store_true", help="edgellm maps the file, not its shared copy")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    edgellm = os.path.join(os.environ.get("EDGELLM_BUILD", "build"), "edgellm")
    shape = ["-t", str(a.threads), "-p", str(a.prompt), "-n", str(a.gen)]

    def ours(f):
        weights = "--no-shm" if a.no_shm else "--shm"
        return run_json([edgellm, "bench", "-m", f, weights, "--bandwidth", "--json", "-r", "1"] + shape)

    def theirs(f):
        return run_json([sys.executable, os.path.join(HERE, "llama_cpp.py"), "--lib", a.lib, "bench", "-m", f, "-r", "1"]
                        + shape)

    for f in a.files:
        print(f"{os.path.basename(f)}, {a.threads} threads (edgellm / llama.cpp):")
        rounds = []  # (edgellm's bench JSON, llama.cpp's)
        for r in range(a.rounds):
            if r % 2 == 0:
                o = ours(f)
                t = theirs(f)
            else:
                t = theirs(f)
                o = ours(f)
            rounds.append((o, t))
            print(f"  round {r + 1}: {o['read_gbs']['median']:.1f} GB/s; pp{a.prompt} {o['pp_tps']['median']:.1f} / "
                  f"{t['pp_tps'][0]:.1f}; tg{a.gen} {o['tg_tps']['median']:.1f} / {t['tg_tps'][0]:.1f}, of the "
                  f"ceiling {100 * o['tg_of_ceiling']['median']:.0f}% / {100 * t['tg_tps'][0] / o['tg_ceiling_tps']:.0f}%")
        o, t = rounds[-1]  # the first round's edgellm may have made the shared copy
        print(f"  edgellm: {o['type']}, kernel {o['kernel']}, weights {o['weights_from']}"
              f"{', in strips' if o.get('weights_in_strips') else ''}; "
              f"llama.cpp {t['llama_cpp']}, ggml backend {t['backend']}")
        pp_o = [o["pp_tps"]["median"] for o, _ in rounds]
        tg_o = [o["tg_tps"]["median"] for o, _ in rounds]
        pp_t = [t["pp_tps"][0] for _, t in rounds]
        tg_t = [t["tg_tps"][0] for _, t in rounds]
        print(f"  pp{a.prompt}  edgellm {spread(pp_o)}  llama.cpp {spread(pp_t)}  "
              f"ratio {spread([x / y for x, y in zip(pp_o, pp_t)], '{:.2f}')}")
        print(f"  tg{a.gen}  edgellm {spread(tg_o)}  llama.cpp {spread(tg_t)}  "
              f"ratio {spread([x / y for x, y in zip(tg_o, tg_t)], '{:.2f}')}")
        print(f"  read bandwidth {spread([o['read_gbs']['median'] for o, _ in rounds])} GB/s; edgellm decode at "
              f"{spread([100 * o['tg_of_ceiling']['median'] for o, _ in rounds], '{:.0f}')}% of the ceiling, "
              f"llama.cpp at {spread([100 * t / o['tg_ceiling_tps'] for (o, _), t in zip(rounds, tg_t)], '{:.0f}')}%")
        sys.stdout.flush()

if __name__ == "__main__":
    main()
