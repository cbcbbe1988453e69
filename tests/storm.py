#!/usr/bin/env python3
"""storm.py PORT N TAG — N streaming completions against edgellmd on 127.0.0.1:PORT, 24 at a
time, with prompts tagged TAG (so none is in the cache). Client i hangs up when i % 3 == 0:
half of those right after sending the request (most are still queued), the others after a
random number of bytes of the stream. Every other client must get a complete stream: strict
UTF-8 frames, exactly one finish_reason, [DONE] last.

Prints one line: served cancelled errors [kinds of error]. Used by tests/integ_load.sh and
tests/soak.sh."""
import http.client
import json
import random
import sys
from concurrent.futures import ThreadPoolExecutor


def stream_ok(raw):
    events = [e for e in raw.split(b"\n\n") if e.strip()]
    if not events or events[-1] != b"data: [DONE]":
        return False
    finishes = 0
    for e in events[:-1]:
        if e.startswith(b":"):
            continue
        j = json.loads(e[6:].decode("utf-8", "strict"))
        finishes += sum(1 for ch in j.get("choices", []) if ch.get("finish_reason"))
    return finishes == 1


def client(port, tag, i):
    rng = random.Random(i)
    leave = i % 3 == 0
    body = json.dumps({"prompt": "storm %s client %d" % (tag, i), "max_tokens": rng.randrange(8, 64),
                       "stream": True, "temperature": 0.8, "seed": i})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        if leave and i % 2 == 0:
            conn.sock.close()
            return "cancelled"
        r = conn.getresponse()
        if r.status != 200:
            return "error %d" % r.status
        if leave:
            r.read(rng.randrange(1, 600))
            conn.sock.close()
            return "cancelled"
        return "served" if stream_ok(r.read()) else "error bad-stream"
    except Exception as e:  # a client-side view of any failure: counted, never raised
        return "error %s" % type(e).__name__
    finally:
        conn.close()


def main():
    port, n, tag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    with ThreadPoolExecutor(24) as ex:
        results = list(ex.map(lambda i: client(port, tag, i), range(n)))
    errors = [r for r in results if r.startswith("error")]
    print(results.count("served"), results.count("cancelled"), len(errors), " ".join(sorted(set(errors)))[:200])


if __name__ == "__main__":
    main()
