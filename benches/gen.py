#!/usr/bin/env python3
"""Plan generators for the benchmarks in this directory.

    gen.py chains DIR CHAINS LENGTH   write DIR/plan.toml and DIR/build.ninja: CHAINS
                                      independent chains of LENGTH no-op steps each
    gen.py layered DIR NODES SEED     write DIR/plan.toml: a layered random DAG of NODES
                                      steps, about two needs per step, fixed SEED
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


def main(argv):
    if len(argv) != 5 or argv[1] not in ("chains", "layered"):
        sys.exit(__doc__)
    out = argv[2]
    os.makedirs(out, exist_ok=True)
    if argv[1] == "chains":
        chains(out, int(argv[3]), int(argv[4]))
    else:
        layered(out, int(argv[3]), int(argv[4]))


if __name__ == "__main__":
    main(sys.argv)
