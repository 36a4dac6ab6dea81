#!/usr/bin/env python3
"""Compare two float32 little-endian logit files of shape [n, vocab].

Passes when every element satisfies |got - ref| <= atol + rtol * |ref| and
every position's argmax agrees (--ignore-argmax: values only, for a tolerance
wide enough to cover gaps between a position's top logits). With
--max-bad-positions K, up to K positions may fail. Prints the
tolerance, the worst error and where it is, the first elements of both, and
how many positions fail. Standard library only.
"""
import argparse
import struct
import sys


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) % 4:
        sys.exit(f"{path}: size {len(data)} is not a multiple of 4")
    return struct.unpack(f"<{len(data) // 4}f", data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("got")
    ap.add_argument("ref")
    ap.add_argument("--vocab", type=int, required=True)
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--max-bad-positions", type=int, default=0)
    ap.add_argument("--ignore-argmax", action="store_true")
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    got, ref = load(a.got), load(a.ref)
    if len(got) != len(ref):
        print(f"FAIL {a.label}: {len(got)} values vs {len(ref)} in the reference")
        return 1
    V = a.vocab
    worst, worst_i, bad = 0.0, 0, 0
    bad_pos = set()
    for i, (g, r) in enumerate(zip(got, ref)):
        e = abs(g - r)
        if not (e <= a.atol + a.rtol * abs(r)):
            bad += 1
            bad_pos.add(i // V)
        if e > worst or e != e:
            worst, worst_i = e, i
    argmax_diff = 0
    for p in range(len(ref) // V):
        rg, rr = got[p * V:(p + 1) * V], ref[p * V:(p + 1) * V]
        if max(range(V), key=rg.__getitem__) != max(range(V), key=rr.__getitem__):
            argmax_diff += 1
            if not a.ignore_argmax:
                bad_pos.add(p)
    head = lambda v: " ".join(f"{x:+.5f}" for x in v[:5])
    print(f"{a.label}: tol atol={a.atol:g} rtol={a.rtol:g}; max |err| {worst:.3g} at position {worst_i // V} "
          f"index {worst_i % V}; {bad} of {len(ref)} outside; argmax differs at {argmax_diff} positions")
    if a.max_bad_positions:
        print(f"  positions failing: {len(bad_pos)} of {len(ref) // V} (allowed: {a.max_bad_positions})")
    print(f"  got[0,:5] {head(got)}\n  ref[0,:5] {head(ref)}")
    ok = len(bad_pos) <= a.max_bad_positions
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
