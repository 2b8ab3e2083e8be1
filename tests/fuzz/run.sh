#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a bounded time, each on a copy of its committed
# seed corpus, and fails on any crash, printing the input and how to reproduce it. CI runs
# `tests/fuzz/run.sh 60`; README.md beside this file explains the targets.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]      SECONDS per target, default 60
#
# The repository is left as it was: the corpus copies, new inputs and crash files live in a
# temporary directory (kept, and printed, when something crashed).
set -euo pipefail
seconds=${1:-60}
shift || true
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
fuzz_dir=tests/fuzz
# cargo-fuzz passes sanitizer flags that need a nightly compiler; this lets stable take them.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir "$fuzz_dir")
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/shardhub-fuzz.XXXXXX")
failed=()
trap 'if [ ${#failed[@]} -eq 0 ]; then rm -rf "$work"; fi' EXIT

# One build for all targets; each run below then starts at once.
cargo fuzz build --fuzz-dir "$fuzz_dir"

for t in "${targets[@]}"; do
    mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
    if [ -d "$fuzz_dir/corpus/$t" ]; then
        cp -R "$fuzz_dir/corpus/$t/." "$work/corpus/$t/"
    fi
    seeds=$(find "$work/corpus/$t" -type f | wc -l)
    echo "== fuzz $t: ${seconds}s from $seeds seeds"
    log="$work/$t.log"
    # -timeout: one input taking 10 s is a hang; -rss_limit_mb: memory is part of the contract.
    if cargo fuzz run --fuzz-dir "$fuzz_dir" "$t" "$work/corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix="$work/artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" | tr '\n' ' '
        echo
        continue
    fi
    failed+=("$t")
    echo "fuzz: $t FAILED; the end of its log:"
    tail -n 60 "$log"
    for f in "$work/artifacts/$t"/*; do
        [ -f "$f" ] || continue
        echo "--- input $(basename "$f") ($(wc -c <"$f") bytes), hex:"
        od -An -tx1 -v "$f" | head -n 64
        echo "--- base64:"
        base64 -w0 "$f"
        echo
        echo "--- to reproduce (from the repository root):"
        echo "    echo '$(base64 -w0 "$f" | head -c 8192)' | base64 -d > crash.bin"
        echo "    RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir $fuzz_dir $t crash.bin"
        echo "    RUSTC_BOOTSTRAP=1 cargo fuzz fmt --fuzz-dir $fuzz_dir $t crash.bin   # the input as a value"
    done
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crashes in ${failed[*]}; logs, corpora and inputs kept in $work" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"
