#!/usr/bin/env bash
# `payfm fm pretrain` throughput on the default world, for one or more source trees (to compare a change
# with the code before it on the same machine), with GPU utilisation sampled by nvidia-smi where there is one.
#
#   bash bench/fm_pretrain_speed.sh OUT "STEPS BATCH" ... -- SRC...
#
# e.g. `bash bench/fm_pretrain_speed.sh /tmp/out "600 1024" "300 4096" -- /tmp/before src` runs each
# (steps, batch) pair with each source tree (a directory holding the `payfm` package), in that order, on a
# default world generated once in a temporary workspace; OUT/log.txt gets one line per run (charges/s and
# the final loss), OUT/gpu.csv the utilisation samples (timestamp, % busy, MiB used). Extra options for every
# run: PRETRAIN_ARGS (e.g. "--threads 2" goes before `pretrain`: FM_ARGS). The world (about 1M charges,
# 200 MB) is deleted at exit, and the nvidia-smi sampler stopped, however the script ends.
set -uo pipefail
out=$1
shift
runs=()
while [[ $# -gt 0 && $1 != -- ]]; do runs+=("$1"); shift; done
shift
mkdir -p "$out"
payfm() { PYTHONPATH="$src${PYTHONPATH:+:$PYTHONPATH}" python3 -c 'from payfm.cli.main import main; main()' "$@"; }
tmp=$(mktemp -d)
ws=$tmp/ws
cleanup() {
  [[ -n ${smi:-} ]] && kill "$smi" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
src=$1 payfm -w "$ws" generate >/dev/null || exit 1
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$out/log.txt"
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 250 \
    >"$out/gpu.csv" &
  smi=$!
fi
for run in "${runs[@]}"; do
  read -r steps batch <<<"$run"
  for src in "$@"; do
    start=$(date -u +%H:%M:%S.%N)
    # shellcheck disable=SC2086  # the extra options are lists
    line=$(payfm -w "$ws" fm ${FM_ARGS:-} pretrain --name speed --fresh --steps "$steps" \
      --batch-size "$batch" ${PRETRAIN_ARGS:-} 2>/dev/null | tr '\n' ' ')
    echo "$start-$(date -u +%H:%M:%S.%N) $src: steps $steps batch $batch: $line" | tee -a "$out/log.txt"
  done
done
