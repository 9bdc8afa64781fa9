#!/usr/bin/env python3
"""The cases of `benches/run determinism-eval` (see benches/README.md).

Fifteen small build steps: ten that are nondeterministic in exactly one way, five that are
deterministic; and three probes, nondeterministic in one way each, beyond the ten (not
counted). Each writes only under out/ID/ of a tree holding in/ (eight text files, created
in a fixed order that is not name order) and src/hello.c.

    cases.py list                  one line per case: ID, KIND (nondet|det|probe), WAY
    cases.py cmd ID                the case's shell command (run by `sh -ec` in the tree)
    cases.py tree DIR              write the tree (in/ and src/) under DIR
    cases.py plan DIR              write DIR/plan.toml: one sandboxed step per case, with
                                   its inputs and outputs = ["out/ID/"]
    cases.py plan-probes DIR       write DIR/plan.toml: one step per probe
    cases.py plan-pass-env DIR     write DIR/plan.toml with the locale and timezone cases
                                   only, each passing LC_ALL, LANG and TZ through (pass_env)
    cases.py selfcheck DIR         outside both tools, on this host: every nondeterministic
                                   case (and probe) changes when its one factor changes and
                                   stays the same when every other factor changes (the
                                   run-to-run ones: two plain runs differ); every
                                   deterministic case stays the same when all factors change.
                                   Exit status 1 otherwise
    cases.py variations RECORD     the variations the last run record says the checks applied
    cases.py classify RECORD ROOT  read the last run record in RECORD (runs.ndjson) and the
                                   outputs collected under ROOT; one line per case:
                                   ID KIND CLASS CAUSE DETAIL, CLASS one of drift,
                                   reproducible, fixed-by-sandbox, missing

A case is `fixed-by-sandbox` when ci-intel found it reproducible and the output it
collected shows the sandbox's pinned value (umask 022, LC_ALL=C, TZ=UTC, a new pid
namespace): the nondeterminism was neutralised rather than overlooked.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

# The order in/ is created in: not name order, so that a listing in directory order
# (newest first on tmpfs) is told apart from a sorted one.
IN_ORDER = ["05", "02", "08", "01", "07", "03", "06", "04"]

HELLO_C = '#include <stdio.h>\n\nint main(void) {\n    puts("hello");\n    return 0;\n}\n'

# A fixed instant, for the commands whose output depends on how it is shown (zone, locale).
INSTANT = 1700000000  # 2023-11-14 22:13:20 UTC


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # "nondet", "det" or "probe"
    way: str  # what varies it (nondet) or what it is (det)
    cmd: str
    inputs: tuple = ()
    # The factor of the host check that changes it: a key of BASE, or None when plain runs
    # differ (run to run).
    factor: str | None = None
    # The causes a drift report may name for it (ci-intel's variations, or run_to_run).
    causes: tuple = ()
    # The value its factor takes in the host check when not ALT's, and how to say it.
    alt: tuple = ()


CASES = [
    Case("date", "nondet", "embedded date (date -u +%F)",
         "mkdir -p out/date && date -u +%F > out/date/stamp", factor="clock", causes=("time",)),
    Case("random", "nondet", "random bytes (/dev/urandom)",
         "mkdir -p out/random && head -c 16 /dev/urandom | od -An -tx1 > out/random/bytes",
         causes=("run_to_run",)),
    Case("hostname", "nondet", "host name (uname -n)",
         "mkdir -p out/hostname && uname -n > out/hostname/host", factor="host", causes=("hostname",)),
    Case("build-path", "nondet", "absolute build path (pwd)",
         "mkdir -p out/build-path && pwd > out/build-path/where", factor="path", causes=("build_path",)),
    Case("dir-order", "nondet", "directory order (find, unsorted, over in/)",
         "mkdir -p out/dir-order && find in -type f > out/dir-order/list",
         inputs=("in/**",), factor="order", causes=("dir_order",)),
    Case("umask", "nondet", "umask (mode of a new file, stat -c %a)",
         "mkdir -p out/umask && touch out/umask/file && stat -c %a out/umask/file > out/umask/mode",
         factor="umask", causes=("umask",)),
    Case("locale", "nondet", "locale (printf %'d, month name; LC_ALL from the environment)",
         "mkdir -p out/locale && /usr/bin/printf \"%'d\\n\" 1234567 > out/locale/text"
         f" && date -u -d @{INSTANT} +%B >> out/locale/text",
         factor="locale", causes=("host_env",)),
    Case("timezone", "nondet", "time zone (date +%H:%M %Z of a fixed instant)",
         f"mkdir -p out/timezone && date -d @{INSTANT} '+%H:%M %Z' > out/timezone/time",
         factor="tz", causes=("host_env",)),
    Case("race", "nondet", "parallel race (two background writers append to one file)",
         "mkdir -p out/race && for w in a b; do"
         " (i=0; while [ $i -lt 2000 ]; do echo $w$i >> out/race/log; i=$((i+1)); done) &"
         " done; wait",
         causes=("run_to_run", "num_cpus")),
    Case("pid", "nondet", "process id (echo $$)",
         "mkdir -p out/pid && echo $$ > out/pid/pid", causes=("run_to_run",)),
    Case("tar-sorted", "det", "tar --sort=name --mtime --owner=0 of in/",
         "mkdir -p out/tar-sorted && tar --sort=name --mtime=@1700000000 --owner=0 --group=0"
         " --numeric-owner --mode=go-w,a+rX --format=gnu -cf out/tar-sorted/in.tar in",
         inputs=("in/**",)),
    Case("cc", "det", "cc -O2 -ffile-prefix-map, no debug info",
         "mkdir -p out/cc && cc -O2 -ffile-prefix-map=\"$PWD\"=. -o out/cc/hello src/hello.c",
         inputs=("src/hello.c",)),
    Case("sorted-list", "det", "find in -type f | LC_ALL=C sort",
         "mkdir -p out/sorted-list && find in -type f | LC_ALL=C sort > out/sorted-list/list",
         inputs=("in/**",)),
    Case("sha256", "det", "sha256sum of in/, sorted",
         "mkdir -p out/sha256 && find in -type f | LC_ALL=C sort | xargs sha256sum"
         " > out/sha256/SHA256SUMS",
         inputs=("in/**",)),
    Case("gzip-n", "det", "gzip -n -9 of an input",
         "mkdir -p out/gzip-n && gzip -n -9 -c in/f05.txt > out/gzip-n/f05.txt.gz",
         inputs=("in/**",)),
    # Probes: one way each that ci-intel's variations might not reach.
    Case("year", "probe", "embedded year (date -u +%Y, a copyright line)",
         "mkdir -p out/year && date -u +%Y > out/year/stamp", factor="clock",
         causes=("time",), alt=("@2027-11-28 10:00:00", "clock (+1 year)")),
    Case("kernel", "probe", "kernel release (uname -r, a build banner)",
         "mkdir -p out/kernel && uname -r > out/kernel/release", factor="kernel",
         causes=("kernel",)),
    Case("own-dir-order", "probe", "directory order of a directory the step creates (ls -U)",
         "mkdir -p out/own-dir-order/d && for f in 3 1 4 2; do echo $f > out/own-dir-order/d/f$f;"
         " done && ls -U out/own-dir-order/d > out/own-dir-order/list",
         factor="fs", causes=("dir_order",)),
]

BY_ID = {c.id: c for c in CASES}


def case(case_id):
    try:
        return BY_ID[case_id]
    except KeyError:
        sys.exit(f"cases.py: no case {case_id!r} (cases.py list)")


def write_tree(root, order=IN_ORDER):
    """in/fNN.txt (NN*100 numbered lines each), created in `order`, and src/hello.c."""
    os.makedirs(os.path.join(root, "in"))
    os.makedirs(os.path.join(root, "src"))
    for n in order:
        path = os.path.join(root, "in", f"f{n}.txt")
        with open(path, "w") as f:
            f.write("".join(f"{i}\n" for i in range(1, int(n) * 100 + 1)))
        os.chmod(path, 0o644)
    path = os.path.join(root, "src", "hello.c")
    with open(path, "w") as f:
        f.write(HELLO_C)
    os.chmod(path, 0o644)
    for d in (root, os.path.join(root, "in"), os.path.join(root, "src")):
        os.chmod(d, 0o755)


def toml_literal(s):
    assert "'''" not in s
    return f"'''{s}'''"


def write_plan(root, cases, pass_env=()):
    lines = ["version = 1", 'name = "determinism-eval"', ""]
    for c in cases:
        lines.append(f"[steps.{c.id}]")
        lines.append(f"run = {toml_literal(c.cmd)}")
        if c.inputs:
            lines.append("inputs = [" + ", ".join(f'"{i}"' for i in c.inputs) + "]")
        lines.append(f'outputs = ["out/{c.id}/"]')
        if pass_env:
            lines.append("pass_env = [" + ", ".join(f'"{n}"' for n in pass_env) + "]")
        lines.append("")
    with open(os.path.join(root, "plan.toml"), "w") as f:
        f.write("\n".join(lines))


# The host check: one factor at a time. Each run builds the tree afresh (in/ created in
# ORDER) at FS/selfcheck/PATH (FS: the work directory, or a directory on a file system of
# another type) and runs the command there with `sh -ec`, in a new UTS namespace with
# hostname HOST, under libfaketime started at CLOCK, with UMASK, LC_ALL and TZ, and with
# `setarch --uname-2.6` when KERNEL. Outputs are compared by path and content (as `diff -r`
# does; file modes are left out: every file's mode follows the umask).
BASE = {"path": "a", "umask": 0o022, "locale": "C", "tz": "UTC", "host": "eval-host-a",
        "clock": "@2026-11-28 10:00:00", "order": "given", "kernel": False, "fs": None}
ALT = {"path": "b", "umask": 0o002, "locale": "et_EE.UTF-8", "tz": "Pacific/Chatham",
       "host": "eval-host-b", "clock": "@2026-12-01 10:00:00", "order": "reversed",
       "kernel": True}
FACTOR_NAMES = {"path": "build path", "umask": "umask", "locale": "LC_ALL", "tz": "TZ",
                "host": "host name", "clock": "clock (+398 days)", "order": "creation order of in/",
                "kernel": "kernel release (setarch --uname-2.6)", "fs": "file system"}


def fs_type(path):
    return subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True,
                          text=True, check=True).stdout.strip()


def other_fs(work):
    """A writable directory on a file system of another type than WORK's, or None."""
    mine = fs_type(work)
    for d in ("/var/tmp", "/tmp", "/dev/shm"):
        if os.path.isdir(d) and os.access(d, os.W_OK) and fs_type(d) != mine:
            return d
    return None


def run_on_host(work, c, cfg):
    base = cfg.get("fs") or work
    root = os.path.join(base, "selfcheck", cfg["path"])
    shutil.rmtree(root, ignore_errors=True)
    write_tree(root, IN_ORDER if cfg["order"] == "given" else IN_ORDER[::-1])
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": root, "LC_ALL": cfg["locale"],
           "TZ": cfg["tz"]}
    kernel = ["setarch", os.uname().machine, "--uname-2.6"] if cfg["kernel"] else []
    argv = ["unshare", "--uts", "sh", "-c", 'hostname "$1" && shift && exec "$@"', "-",
            cfg["host"], *kernel, "faketime", "-f", cfg["clock"], "sh", "-ec", c.cmd]
    try:
        proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True,
                              preexec_fn=lambda: os.umask(cfg["umask"]))
        if proc.returncode != 0:
            sys.exit(f"cases.py: case {c.id} failed on the host ({cfg}): {proc.stderr.strip()}")
        out = os.path.join(root, "out", c.id)
        digest = hashlib.sha256()
        for dirpath, dirnames, filenames in os.walk(out):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                digest.update(os.path.relpath(path, out).encode() + b"\0")
                with open(path, "rb") as f:
                    digest.update(hashlib.sha256(f.read()).digest())
        return digest.hexdigest()
    finally:
        shutil.rmtree(os.path.join(base, "selfcheck"), ignore_errors=True)


def selfcheck(work):
    failed = False
    alt_fs = None
    for c in CASES:
        if c.factor == "fs":
            alt_fs = other_fs(work)
            if alt_fs is None:
                print(f"host:     {c.id:<13} not checked: no writable file system of another "
                      f"type than {fs_type(work)} here")
                continue
            alt_fs = os.path.join(alt_fs, f"determinism-eval.{os.getpid()}")
            os.makedirs(alt_fs)
        try:
            base = run_on_host(work, c, BASE)
            if c.kind == "det":
                same = run_on_host(work, c, ALT) == base
                note = ("same with every factor changed" if same
                        else "CHANGES when the factors change")
                failed |= not same
            elif c.factor is None:
                # Run to run: two plain runs must differ (a race may, rarely, repeat itself).
                differs = any(run_on_host(work, c, BASE) != base for _ in range(3))
                note = ("differs between two plain runs" if differs
                        else "DOES NOT differ in 3 plain runs")
                failed |= not differs
            else:
                value, name = c.alt or (ALT.get(c.factor), FACTOR_NAMES[c.factor])
                if c.factor == "fs":
                    value, name = alt_fs, f"file system ({fs_type(work)} -> {fs_type(alt_fs)})"
                varied = dict(BASE, **{c.factor: value})
                others = dict(ALT, **{c.factor: BASE[c.factor]})
                differs = run_on_host(work, c, varied) != base
                same = run_on_host(work, c, others) == base
                note = (f"differs with the {name} changed" if differs
                        else f"DOES NOT differ with the {name} changed")
                note += ("; same with every other factor changed" if same
                         else "; CHANGES with the other factors")
                failed |= not (differs and same)
        finally:
            if c.factor == "fs" and alt_fs:
                shutil.rmtree(alt_fs, ignore_errors=True)
        print(f"host:     {c.id:<13} {note}")
    return 1 if failed else 0


def read(root, c, name):
    try:
        with open(os.path.join(root, "out", c.id, name)) as f:
            return f.read()
    except OSError:
        return None


# Proof that a reproducible verdict is the sandbox's doing: the collected output shows the
# value the sandbox pins. Returns a description, or None.
def pinned(root, c):
    if c.id == "umask" and read(root, c, "mode") == "644\n":
        return "umask 022 (fixed set): mode 644"
    if c.id == "locale" and read(root, c, "text") == "1234567\nNovember\n":
        return "LC_ALL=C (fixed set): 1234567, November"
    if c.id == "timezone" and read(root, c, "time") == "22:13 UTC\n":
        return "TZ=UTC (fixed set): 22:13 UTC"
    if c.id == "pid":
        text = read(root, c, "pid")
        if text is not None and text.strip().isdigit() and int(text) <= 10:
            return f"new pid namespace: the shell is pid {int(text)} in every run"
    return None


def last_record(record_path):
    with open(record_path) as f:
        return json.loads([line for line in f if line.strip()][-1])


def variations(record_path):
    seen = []
    for d in last_record(record_path).get("determinism") or []:
        for v in d.get("variations") or []:
            if v not in seen:
                seen.append(v)
    print(", ".join(seen) if seen else "none")


def classify(record_path, root, ids=None):
    record = last_record(record_path)
    verdicts = {d["job"]: d for d in record.get("determinism") or []}
    for c in CASES:
        if ids and c.id not in ids:
            continue
        d = verdicts.get(c.id)
        if d is None:
            print(f"{c.id} {c.kind} missing - no verdict in the run record")
            continue
        cause = (d.get("cause") or "-").replace(", ", ",")
        if d["verdict"] == "drift":
            cls, detail = "drift", f"{d.get('differing_files')} file(s) differ"
            if c.kind != "det":
                named = set(cause.split(","))  # the record joins several with ", "
                right = bool(named & set(c.causes))
                detail += ("; the cause expected" if right
                           else f"; expected cause {'/'.join(c.causes)}")
        elif d["verdict"] == "reproducible":
            pin = pinned(root, c) if c.kind != "det" else None
            cls, detail = ("fixed-by-sandbox", pin) if pin else ("reproducible", "-")
        else:
            cls, detail = "missing", f"verdict {d['verdict']!r}"
        print(f"{c.id} {c.kind} {cls} {cause} {detail}")


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "list" and not args:
        for c in CASES:
            print(f"{c.id}\t{c.kind}\t{c.way}")
    elif cmd == "cmd" and len(args) == 1:
        print(case(args[0]).cmd)
    elif cmd == "tree" and len(args) == 1:
        write_tree(args[0])
    elif cmd == "plan" and len(args) == 1:
        write_plan(args[0], [c for c in CASES if c.kind != "probe"])
    elif cmd == "plan-probes" and len(args) == 1:
        write_plan(args[0], [c for c in CASES if c.kind == "probe"])
    elif cmd == "plan-pass-env" and len(args) == 1:
        write_plan(args[0], [BY_ID["locale"], BY_ID["timezone"]], ("LC_ALL", "LANG", "TZ"))
    elif cmd == "selfcheck" and len(args) == 1:
        return selfcheck(args[0])
    elif cmd == "variations" and len(args) == 1:
        variations(args[0])
    elif cmd == "classify" and len(args) >= 2:
        classify(args[0], args[1], set(args[2:]))
    else:
        sys.exit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
