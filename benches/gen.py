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
    gen.py work DIR SEED              write DIR/plan.toml and its inputs: steps that do real
                                      work of different sizes (cc -O2, sort, gzip -9, xz -6,
                                      sha256sum), for the runtime model to learn
    gen.py mutate DIR SEED RUN WHAT   change the inputs of `work` before run RUN: WHAT is
                                      `some` (a seeded random choice) or a comma-separated
                                      list of text, blob, src, tree
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


# The `work` plan: base sizes of its inputs, each scaled by 0.5-2x by `mutate`.
WORK_SOURCES = {"small": 150, "medium": 350, "large": 800}  # functions per C file
WORK_TEXT = 32 << 20  # data/text.txt: sorted, gzipped
WORK_BLOB = 3 << 20  # data/blob.txt: xz -6
WORK_TREE = 48  # files of 1-5 MiB under tree/, hashed

WORK_PLAN = """version = 1
name = "predict-work"

[steps.cc-timeit]
run = "mkdir -p obj && cc -O2 -std=c11 -c src/timeit.c -o obj/timeit.o"
inputs = ["src/timeit.c"]
outputs = ["obj/timeit.o"]
{cc_steps}
[steps.archive]
needs = ["cc-timeit", "cc-small", "cc-medium", "cc-large"]
run = "mkdir -p lib && ar rcs lib/libwork.a obj/timeit.o obj/small.o obj/medium.o obj/large.o"
outputs = ["lib/libwork.a"]

[steps.sort-text]
run = "mkdir -p sorted && LC_ALL=C sort -S 256M data/text.txt -o sorted/text.txt"
inputs = ["data/text.txt"]
outputs = ["sorted/text.txt"]

[steps.count-lines]
needs = ["sort-text"]
run = "mkdir -p counts && LC_ALL=C uniq -c sorted/text.txt | LC_ALL=C sort -rn -S 256M | head -n 100 > counts/top.txt"
outputs = ["counts/top.txt"]

[steps.gzip-text]
run = "mkdir -p gz && gzip -9 -c data/text.txt > gz/text.gz"
inputs = ["data/text.txt"]
outputs = ["gz/text.gz"]

[steps.xz-blob]
run = "mkdir -p xz && xz -6 -T1 -c data/blob.txt > xz/blob.xz"
inputs = ["data/blob.txt"]
outputs = ["xz/blob.xz"]

[steps.check-xz]
needs = ["xz-blob"]
run = "xz -dc xz/blob.xz | sha256sum"

[steps.sha-tree]
run = "mkdir -p sums && find tree -type f | LC_ALL=C sort | xargs sha256sum > sums/tree.sha256"
inputs = ["tree/**"]
outputs = ["sums/tree.sha256"]

[steps.report]
needs = ["archive", "count-lines", "gzip-text", "check-xz", "sha-tree"]
run = "wc -c lib/libwork.a counts/top.txt gz/text.gz sums/tree.sha256"
"""

WORK_CC = """
[steps.cc-{name}]
run = "mkdir -p obj && cc -O2 -c src/{name}.c -o obj/{name}.o"
inputs = ["src/{name}.c"]
outputs = ["obj/{name}.o"]
"""


def c_source(n_funcs, salt):
    # Loops and branches enough to keep the optimiser busy; `salt` changes the constants.
    rng = random.Random(f"{n_funcs}/{salt}")
    out = ["#include <stddef.h>\n"]
    for i in range(n_funcs):
        k = rng.randrange(1, 1000)
        out.append(
            f"""
double f{i}(const double *a, size_t n) {{
    double s = {k}.0;
    for (size_t j = 0; j < n; j++) {{
        double x = a[j] * {k % 7 + 1}.5 + s;
        if (x > {k}.0) s += x / (double)(j + 1); else s -= x * 0.{k};
        for (int r = 0; r < {k % 5 + 2}; r++) s = s * 0.999 + (double)(r ^ (int)j);
    }}
    return s;
}}
"""
        )
    return "".join(out)


# Random text: letters, about one space in six characters and one newline in 25.
TEXT_TABLE = bytes(
    (10 if b < 10 else 32 if b < 50 else ord("a") + b % 26) for b in range(256)
)


def write_text(path, size, rng):
    with open(path, "wb") as f:
        f.write(rng.randbytes(size).translate(TEXT_TABLE) + b"\n")


def write_tree_file(path, rng):
    with open(path, "wb") as f:
        f.write(rng.randbytes(rng.randint(1 << 20, 5 << 20)))


def scaled(rng, base):
    # 0.5x to 2x, uniform in log space.
    return int(base * 2 ** rng.uniform(-1, 1))


def work(out, seed):
    rng = random.Random(seed)
    for d in ("src", "data", "tree"):
        os.makedirs(os.path.join(out, d), exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "timeit.c"), "rb") as f:
        timeit = f.read()
    with open(os.path.join(out, "src", "timeit.c"), "wb") as f:
        f.write(timeit)
    for name, n in WORK_SOURCES.items():
        with open(os.path.join(out, "src", f"{name}.c"), "w") as f:
            f.write(c_source(n, 0))
    write_text(os.path.join(out, "data", "text.txt"), WORK_TEXT, rng)
    write_text(os.path.join(out, "data", "blob.txt"), WORK_BLOB, rng)
    for i in range(WORK_TREE):
        write_tree_file(os.path.join(out, "tree", f"f{i:03}.bin"), rng)
    cc = "".join(WORK_CC.format(name=name) for name in WORK_SOURCES)
    with open(os.path.join(out, "plan.toml"), "w") as f:
        f.write(WORK_PLAN.format(cc_steps=cc))


def mutate(out, seed, run, what):
    # The same (SEED, RUN) always makes the same change, so runs are reproducible.
    rng = random.Random(f"{seed}/{run}")
    items = ["text", "blob", "src", "tree"]
    if what == "some":
        chosen = [i for i in items if rng.random() < 0.6] or [rng.choice(items)]
    else:
        chosen = what.split(",")
        unknown = set(chosen) - set(items)
        if unknown:
            sys.exit(f"gen.py mutate: unknown input kind(s) {sorted(unknown)}, not in {items}")
    changes = []
    if "text" in chosen:
        size = scaled(rng, WORK_TEXT)
        write_text(os.path.join(out, "data", "text.txt"), size, rng)
        changes.append(f"text {size >> 20} MiB")
    if "blob" in chosen:
        size = scaled(rng, WORK_BLOB)
        write_text(os.path.join(out, "data", "blob.txt"), size, rng)
        changes.append(f"blob {size / (1 << 20):.1f} MiB")
    if "src" in chosen:
        # One or two sources: resized (0.5-2x the functions) or only their constants
        # changed (a touch that keeps the size).
        for name in rng.sample(sorted(WORK_SOURCES), rng.randint(1, 2)):
            path = os.path.join(out, "src", f"{name}.c")
            if rng.random() < 0.5:
                n = scaled(rng, WORK_SOURCES[name])
                changes.append(f"{name}.c {n} functions")
            else:
                with open(path) as f:
                    n = f.read().count("\ndouble f")
                changes.append(f"{name}.c touched")
            with open(path, "w") as f:
                f.write(c_source(n, run))
    if "tree" in chosen:
        tree = os.path.join(out, "tree")
        files = sorted(os.listdir(tree))
        k = rng.randint(1, 4)
        for name in rng.sample(files, min(k, len(files) - 1)):
            os.remove(os.path.join(tree, name))
        for _ in range(rng.randint(1, 4)):
            name = f"r{run:02}-{rng.randrange(1 << 30):08x}.bin"
            write_tree_file(os.path.join(tree, name), rng)
        changes.append(f"tree {len(os.listdir(tree))} files")
    print(", ".join(changes))


def main(argv):
    kinds = {"chains": 5, "layered": 5, "tree": 4, "touch": 5, "work": 4, "mutate": 6}
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
    elif argv[1] == "work":
        work(out, int(argv[3]))
    elif argv[1] == "mutate":
        mutate(out, int(argv[3]), int(argv[4]), argv[5])
    else:
        touch(out, int(argv[3]), int(argv[4]))


if __name__ == "__main__":
    main(sys.argv)
