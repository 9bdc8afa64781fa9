#!/usr/bin/env bash
# Runs fuzz targets for a while each, with their seeds and dictionaries.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     (default: 60 seconds, every target)
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). Run from
# anywhere; the targets are built in target/fuzz (under the build directory the project's
# plans already keep out of their input walks), the corpus grows in fuzz/corpus/TARGET,
# crashes land in fuzz/artifacts/TARGET, and each run's libFuzzer output is kept in
# fuzz/logs/TARGET.log. Extra libFuzzer flags can
# be given in FUZZ_FLAGS (e.g. FUZZ_FLAGS="-fork=1 -ignore_crashes=1" to go on past a crash).
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

mkdir -p fuzz/logs
status=0
for t in "${targets[@]}"; do
    corpus=(fuzz/corpus/"$t")
    mkdir -p "${corpus[0]}"
    case "$t" in
        plan_parse) corpus+=(plans scheduler/tests/fixtures) ;;
        autopsy_classify) corpus+=(tests/fixtures/autopsy) ;;
        *) [ -d fuzz/seeds/"$t" ] && corpus+=(fuzz/seeds/"$t") ;;
    esac
    flags=(-max_total_time="$seconds" -timeout=60)
    [ -f fuzz/dicts/"$t".dict ] && flags+=(-dict="$PWD"/fuzz/dicts/"$t".dict)
    # Heads up to the proxy's limit and past it (MAX_HEAD_BYTES is 16 KiB).
    [ "$t" = egress_request ] && flags+=(-max_len=20000)
    # shellcheck disable=SC2206 # FUZZ_FLAGS is a list of flags
    flags+=(${FUZZ_FLAGS:-})
    echo "== $t (${seconds}s)"
    if cargo +nightly fuzz run --target-dir "$PWD"/target/fuzz "$t" "${corpus[@]}" -- "${flags[@]}" \
        >fuzz/logs/"$t".log 2>&1; then
        grep -E '^Done [0-9]+ runs' fuzz/logs/"$t".log || tail -n 2 fuzz/logs/"$t".log
    else
        status=1
        echo "$t FAILED: see fuzz/logs/$t.log"
        grep -m1 -A3 'panicked at' fuzz/logs/"$t".log || tail -n 20 fuzz/logs/"$t".log
    fi
done
exit "$status"
