#!/usr/bin/env python3
"""Deterministic data helpers for bench/run.sh.

  imgtool.py randfile PATH SIZE SEED
      write SIZE bytes of seeded pseudo-random (incompressible) data to PATH.
  imgtool.py mutate IMAGE SEED RUNS RUNSIZE
      overwrite RUNS distinct RUNSIZE-aligned runs of RUNSIZE random bytes at
      seeded random offsets inside IMAGE (in place). Same seed, same change.
"""
import os
import random
import sys

MiB = 1 << 20


def randfile(path, size, seed):
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 4 * MiB)
            f.write(rng.randbytes(n))
            left -= n


def mutate(image, seed, runs, runsize):
    size = os.path.getsize(image)
    slots = size // runsize
    if runs > slots:
        sys.exit(f"mutate: {runs} runs of {runsize} do not fit in {size} bytes")
    rng = random.Random(seed)
    offsets = sorted(rng.sample(range(slots), runs))
    with open(image, "r+b") as f:
        for slot in offsets:
            f.seek(slot * runsize)
            f.write(rng.randbytes(runsize))
    print(f"mutate: wrote {runs} x {runsize} B = {runs * runsize} B "
          f"({100.0 * runs * runsize / size:.2f}% of {size} B), seed {seed}")


def main(argv):
    if len(argv) == 5 and argv[1] == "randfile":
        randfile(argv[2], int(argv[3]), int(argv[4]))
    elif len(argv) == 6 and argv[1] == "mutate":
        mutate(argv[2], int(argv[3]), int(argv[4]), int(argv[5]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
