#!/usr/bin/env python3
"""Writes the seed corpus of tests/fuzz/fuzz_spop.c into tests/fuzz/corpus/fuzz_spop/.

Each seed starts with the 2 control bytes the fuzz target reads (chunking seed, frame-size
selector), then the byte stream HAProxy would send. Re-run after changing the target's input
format: python3 tests/fuzz/make_spop_corpus.py
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_spop")


def varint(v):
    if v < 240:
        return bytes([v])
    out = [(v & 0xFF) | 0xF0]
    v = (v - 240) >> 4
    while v >= 128:
        out.append((v & 0xFF) | 0x80)
        v = (v - 128) >> 7
    out.append(v)
    return bytes(out)


def sstr(s):
    b = s.encode() if isinstance(s, str) else s
    return varint(len(b)) + b


def kv_str(k, v):
    return sstr(k) + b"\x08" + sstr(v)


def kv_u32(k, v):
    return sstr(k) + b"\x03" + varint(v)


def kv_bool(k, v):
    return sstr(k) + bytes([0x11 if v else 0x01])


def frame(ftype, payload, sid=0, fid=0, flags=1):
    body = bytes([ftype]) + struct.pack(">I", flags) + varint(sid) + varint(fid) + payload
    return struct.pack(">I", len(body)) + body


def hello(caps="pipelining,async", hc=False, engine="371d3c51-c748-4cf9-8451-fd14e398d110"):
    p = kv_str("supported-versions", "2.0") + kv_u32("max-frame-size", 16380)
    p += kv_str("capabilities", caps)
    if engine:
        p += kv_str("engine-id", engine)
    if hc:
        p += kv_bool("healthcheck", True)
    return frame(1, p)


def notify(sid, fid, flags=1):
    p = sstr("lunaroute-classify") + bytes([5])
    p += sstr("method") + b"\x08" + sstr("POST")
    p += sstr("path") + b"\x08" + sstr("/v1/chat/completions")
    p += sstr("av") + b"\x02" + varint(1)
    p += sstr("xk") + b"\x02" + varint(0)
    p += sstr("auth") + b"\x08" + sstr("bearer ")
    return frame(3, p, sid, fid, flags)


def discon(code, msg):
    return frame(2, kv_u32("status-code", code) + kv_str("message", msg))


SEEDS = {
    "handshake_notify": b"\x07\xff" + hello() + notify(1, 1) + notify(3, 1) + notify(5, 2),
    "handshake_3x": b"\x2b\xff" + hello("pipelining", engine="lunaroute") + notify(1, 1),
    "healthcheck": b"\x01\xff" + hello("", hc=True, engine=None),
    "disconnect": b"\x10\xff" + hello() + notify(1, 1) + discon(0, "normal"),
    "abort_then_notify": b"\x05\x08" + hello() + notify(1, 1, 3) + notify(1, 2),
    "fragmented": b"\x03\xff" + hello() + notify(1, 1, 0),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
