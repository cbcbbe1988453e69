#!/usr/bin/env python3
"""http_overhead.py — what serving through edgellmd costs over running the engine directly.

The same greedy generation (same model, prompt length, thread count, max tokens) is timed R times
with `edgellm run` (its own report: first token, decode tokens/s) and R times as a streaming
/v1/completions request to a freshly started edgellmd (over TCP on 127.0.0.1 and over its
Unix socket), where the client measures time to the first text chunk and decode tokens/s
from the first chunk to the last. The response cache is off, and every request's prompt
starts differently (a number), so neither the cache nor a reused KV prefix skips the prefill.
Prints the medians side by side and the ratio.

  tools/http_overhead.py -m MODEL.gguf [-t 2] [-n 64] [-r 5]

`make bench-http` runs it on a TinyLlama-shaped Q4_0 file with Llama's vocabulary. The model
needs a real vocabulary: the client times the text chunks it receives, and a token without
text sends none.
"""
import argparse
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

PROMPT = ("The history of the small gateway computer begins with routers that had to do more than route: "
          "they collected readings from sensors, kept logs, answered questions from operators, and, "
          "one day, ran a language model of their own. This is how that")


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=300)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def prompt(i):
    """The i-th prompt: the same length for every i, different from the first token on."""
    return f"{i:03d}. {PROMPT}"


def run_cli(args, text):
    """(first token ms, decode t/s, generated) from one `edgellm run`."""
    out = subprocess.run([args.edgellm, "run", "-m", args.model, "-p", text, "-n", str(args.n), "--temp", "0",
                          "-t", str(args.threads)], capture_output=True, text=True, check=True)
    m = re.search(r"generated: (\d+) tokens in [\d.]+ ms \(([\d.]+) t/s\) \| first token ([\d.]+) ms", out.stderr)
    if not m:
        sys.exit("cannot read edgellm run's report:\n" + out.stderr)
    return float(m.group(3)), float(m.group(2)), int(m.group(1))


def run_http(conn, args, text):
    """(first chunk ms, decode t/s, generated) from one streaming request, measured by the client."""
    body = json.dumps({"prompt": text, "max_tokens": args.n, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}})
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json", "Cache-Control": "no-store"})
    resp = conn.getresponse()
    if resp.status != 200:
        sys.exit(f"edgellmd answered {resp.status}: {resp.read()[:300]!r}")
    first = last = None
    generated = 0
    for line in resp:
        if not line.startswith(b"data: {"):
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            generated = chunk["usage"]["completion_tokens"]
        if any(c.get("text") for c in chunk.get("choices", [])):
            last = time.perf_counter()
            first = first or last
    resp.read()
    # the first chunk carries the first token: n-1 tokens follow it, as edgellm run counts decode
    return (first - t0) * 1e3, (generated - 1) / (last - first) if last > first else 0.0, generated


def start_daemon(args, tmp):
    sock = os.path.join(tmp, "d.sock")
    log = open(os.path.join(tmp, "d.log"), "w+")
    proc = subprocess.Popen([args.edgellmd, "--model", args.model, "--host", "127.0.0.1", "--port", "0", "--socket", sock,
                             "--threads", str(args.threads), "--no-cache", "--state-dir", tmp], stderr=log)
    for _ in range(600):
        log.seek(0)
        text = log.read()
        if "model ready" in text:
            port = int(re.search(r"listening on http://127.0.0.1:(\d+)", text).group(1))
            return proc, port, sock
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    sys.exit("edgellmd did not become ready:\n" + text)


def summary(name, runs):
    ttft = statistics.median(r[0] for r in runs)
    tps = statistics.median(r[1] for r in runs)
    print(f"{name:<22} first token {ttft:8.1f} ms   decode {tps:7.2f} t/s   "
          f"(generated {runs[0][2]}, min–max decode {min(r[1] for r in runs):.2f}–{max(r[1] for r in runs):.2f})")
    return ttft, tps


def main():
    build = os.environ.get("EDGELLM_BUILD", "build")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-n", type=int, default=64, help="tokens to generate")
    ap.add_argument("-r", "--repeats", type=int, default=5)
    ap.add_argument("--edgellm", default=os.path.join(build, "edgellm"))
    ap.add_argument("--edgellmd", default=os.path.join(build, "edgellmd"))
    args = ap.parse_args()
    print(f"model {args.model}, {args.threads} threads, {args.n} tokens, {args.repeats} repeats, "
          f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, sock = start_daemon(args, tmp)
        try:
            tcp, unix = http.client.HTTPConnection("127.0.0.1", port, timeout=300), UnixHTTPConnection(sock)
            run_http(tcp, args, prompt(999))  # warm-up: page the weights in
            # interleaved, so that a change in machine load hits every path alike
            cli, over_tcp, over_unix = [], [], []
            for i in range(args.repeats):
                cli.append(run_cli(args, prompt(3 * i)))
                over_tcp.append(run_http(tcp, args, prompt(3 * i + 1)))
                over_unix.append(run_http(unix, args, prompt(3 * i + 2)))
        finally:
            proc.terminate()
            proc.wait()
    c = summary("edgellm run", cli)
    for name, runs in (("edgellmd HTTP (TCP)", over_tcp), ("edgellmd HTTP (unix)", over_unix)):
        t = summary(name, runs)
        print(f"{'':<22} vs run: first token {t[0] - c[0]:+.1f} ms, decode x{t[1] / c[1]:.3f}")


if __name__ == "__main__":
    main()
