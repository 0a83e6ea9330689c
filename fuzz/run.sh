#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a bounded time each, with
# cargo-fuzz (libFuzzer) on the stable toolchain.
#
#   fuzz/run.sh                  # every target, 20 s each
#   FUZZ_SECS=300 fuzz/run.sh storage_ops decode_a
#
# Needs `cargo install cargo-fuzz` (about 70 s here). cargo-fuzz passes
# nightly-only flags (-Zsanitizer=address); RUSTC_BOOTSTRAP=1 lets the stable
# compiler accept them. New inputs go to fuzz/work/<target>/ (ignored by
# git); crashes to fuzz/artifacts/<target>/. To keep a crash as a
# regression test, copy it into fuzz/corpus/<target>/: the workspace test
# chat-demo/tests/fuzz_corpus.rs replays that directory on stable.
set -euo pipefail
cd "$(dirname "$0")"

secs="${FUZZ_SECS:-20}"
all=(decode_a decode_b decode_c parse_room attachment client_ip origin object_id list_options storage_ops cluster_frames)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=("${all[@]}")
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
  exit 1
fi

export RUSTC_BOOTSTRAP=1

failed=()
for target in "${targets[@]}"; do
  mkdir -p "work/$target"
  echo "== $target: ${secs}s"
  # The work dir first: libFuzzer adds new inputs to the first corpus dir,
  # so the committed seeds in corpus/ stay as they are.
  if ! cargo fuzz run -O "$target" "work/$target" "corpus/$target" -- \
      -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=4096 \
      -print_final_stats=1; then
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "crashes in: ${failed[*]} (see fuzz/artifacts/)" >&2
  exit 1
fi
echo "all targets ran ${secs}s without a crash"
