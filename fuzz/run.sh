#!/usr/bin/env bash
# Run one fuzz target (or all, one after the other) for a while at the lowest priority.
#
#   fuzz/run.sh <target|all> [seconds=300]
#
# Seeds first (`cargo run --example seeds`), then `cargo fuzz run` with a memory cap so an
# unbounded allocation fails the run. RUSTC_BOOTSTRAP=1 lets cargo-fuzz's nightly flags work
# on a stable toolchain. One process per target (libFuzzer's default, what -jobs=1 gives too,
# except that -jobs writes its log to ./fuzz-0.log, which two targets run at once would share).
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: run.sh <target|all> [seconds]}
secs=${2:-300}
targets=(frame_header handshake_request client_response server_conn ops deflate_negotiate inflate)
[[ $target == all ]] || targets=("$target")

max_len() {
    case $1 in
        frame_header) echo 64 ;;
        handshake_request | client_response) echo 16384 ;;
        server_conn) echo 65536 ;;
        ops) echo 8192 ;;
        deflate_negotiate) echo 4096 ;;
        inflate) echo 16384 ;;
    esac
}

cargo run --quiet --example seeds
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    nice -n 19 cargo fuzz run --debug-assertions "$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=512 -malloc_limit_mb=512 \
        -max_len="$(max_len "$t")" -print_final_stats=1
done
