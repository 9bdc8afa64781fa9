#!/usr/bin/env python3
"""Plan and file-tree generators for the benchmarks in this directory.

    gen.py chains DIR CHAINS LENGTH   write DIR/plan.toml and DIR/build.ninja: CHAINS
                                      independent chains of LENGTH no-op steps each
    gen.py layered DIR NODES SEED     write DIR/plan.toml: a layered random DAG of NODES
                                      steps, about two needs per step, fixed SEED
    gen.py tree DIR SEED              write a tree of about 1.1 GiB of random bytes under DIR:
                                      16384 small files (1-64 KiB) in 128 directories and
                                      large files (64-256 MiB) until they hold 512 MiB
    gen.py touch DIR CHAINS LENGTH    write DIR/plan.toml and DIR/build.ninja: CHAINS
                                      chains of LENGTH steps, each touching its own output
                                      file out/ID after the one before it
"""

import os
import random
import sys


def chains(out, n_chains, length):
    plan = ["version = 1", 'name = "bench-chains"', ""]
    ninja = ["rule noop", "  command = true", ""]
    for k in range(n_chains):
        for j in range(length):
            sid = f"c{k}_{j}"
            plan.append(f"[steps.{sid}]")
            plan.append('run = "true"')
            if j > 0:
                plan.append(f'needs = ["c{k}_{j - 1}"]')
            plan.append("")
            # Outputs are never created, so every edge is dirty on every run; the
            # order-only dependency (||) gives the same ordering as `needs`.
            dep = f" || c{k}_{j - 1}" if j > 0 else ""
            ninja.append(f"build {sid}: noop{dep}")
    with open(os.path.join(out, "plan.toml"), "w") as f:
        f.write("\n".join(plan) + "\n")
    with open(os.path.join(out, "build.ninja"), "w") as f:
        f.write("\n".join(ninja) + "\n")


def layered(out, nodes, seed):
    rng = random.Random(seed)
    width = 1000
    plan = ["version = 1", 'name = "bench-layered"', ""]
    for i in range(nodes):
        layer = i // width
        plan.append(f"[steps.s{i}]")
        plan.append('run = "true"')
        if layer > 0:
            lo = max(0, (layer - 3) * width)  # needs reach up to three layers back
            hi = layer * width
            needs = sorted(set(rng.randrange(lo, hi) for _ in range(2)))
            plan.append("needs = [" + ", ".join(f'"s{n}"' for n in needs) + "]")
        plan.append("")
    with open(os.path.join(out, "plan.toml"), "w") as f:
        f.write("\n".join(plan) + "\n")


def tree(out, seed):
    # Every file's bytes are drawn from one seeded generator, so no two files share
    # content (the cache stores each distinct content once) and the same SEED always
    # gives the same tree, whichever Python 3.9+ writes it.
    rng = random.Random(seed)
    small_dirs, per_dir = 128, 128
    for d in range(small_dirs):
        sub = os.path.join(out, "small", f"d{d:03}")
        os.makedirs(sub, exist_ok=True)
        for k in range(per_dir):
            size = rng.randint(1 << 10, 64 << 10)
            with open(os.path.join(sub, f"f{k:03}.bin"), "wb") as f:
                f.write(rng.randbytes(size))
    large = os.path.join(out, "large")
    os.makedirs(large, exist_ok=True)
    total, n = 0, 0
    while total < 512 << 20:
        size = rng.randint(64 << 20, 256 << 20)
        with open(os.path.join(large, f"l{n:02}.bin"), "wb") as f:
            left = size
            while left:  # in pieces: a 256 MiB file needs no 256 MiB buffer
                piece = min(left, 16 << 20)
                f.write(rng.randbytes(piece))
                left -= piece
        total += size
        n += 1


def touch(out, n_chains, length):
    plan = ["version = 1", 'name = "bench-touch"', ""]
    ninja = ["rule touch", "  command = touch $out", ""]
    for k in range(n_chains):
        for j in range(length):
            sid = f"c{k}_{j}"
            plan.append(f"[steps.{sid}]")
            plan.append(f'argv = ["touch", "out/{sid}"]')
            plan.append(f'outputs = ["out/{sid}"]')
            if j > 0:
                plan.append(f'needs = ["c{k}_{j - 1}"]')
            plan.append("")
            # The step before is a real input: out/ID is dirty when it is newer.
            dep = f" out/c{k}_{j - 1}" if j > 0 else ""
            ninja.append(f"build out/{sid}: touch{dep}")
    with open(os.path.join(out, "plan.toml"), "w") as f:
        f.write("\n".join(plan) + "\n")
    with open(os.path.join(out, "build.ninja"), "w") as f:
        f.write("\n".join(ninja) + "\n")


def main(argv):
    kinds = {"chains": 5, "layered": 5, "tree": 4, "touch": 5}
    if len(argv) < 2 or kinds.get(argv[1]) != len(argv):
        sys.exit(__doc__)
    out = argv[2]
    os.makedirs(out, exist_ok=True)
    if argv[1] == "chains":
        chains(out, int(argv[3]), int(argv[4]))
    elif argv[1] == "layered":
        layered(out, int(argv[3]), int(argv[4]))
    elif argv[1] == "tree":
        tree(out, int(argv[3]))
    else:
        touch(out, int(argv[3]), int(argv[4]))


if __name__ == "__main__":
    main(sys.argv)
