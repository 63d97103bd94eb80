#!/usr/bin/env bash
# Pretrain foundation-model checkpoints on a GPU machine (the device tool) and bring them back for
# `payfm fm evaluate` on the CPU: the default worlds are generated there, checked equal to this machine's by
# their charges' digest (bench/charges_digest.py), and pretrained; GPU utilisation is sampled all along. A
# world whose digest differs from the one given stops the script (exit 1) before any pretraining: its
# checkpoints would be of another world than the one they are evaluated on here.
#
#   bash bench/fm_gpu_pretrain.sh OUT DIGEST0 DIGEST1 RUN...     RUN = seed:name:seconds:pretrain-args
#
# e.g. RUN = '0:g6:200:--epochs 6 --batch-size 1024 --lr 6e-3 --warmup 100' pretrains checkpoint g6 on the
# seed-0 world for at most 200 s (a run stopped by the limit keeps its last checkpoint, every 200 steps).
# Each checkpoint comes back as OUT/<name>-seed<seed>.tar (extract it under the workspace's fm/).
# Runs where `payfm` is importable. On the device tool's H200 (Python 3.12, torch 2.11, no registry) the
# wheels it lacks were carried in .whl/ (duckdb 2.0.1 and lark 1.3.1 for cp312; bench/bench_fm.py also needs
# orjson) and the command was:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
#   PYTHONPATH=/tmp/site:src bash bench/fm_gpu_pretrain.sh $OUT 301854322e14a512 9d4e2b03cc64c272 RUN...
# (the digests of the seed-0 and seed-1 default worlds before 2026-12-06, from bench/charges_digest.py here).
# The default world changed on 2026-12-06 (docs/synth.md): `payfm generate --seed 0` now gives digest
# 7a1c53146fe763a1 (999,686 charges) and `--seed 1` 5b0892ad96e02089 (999,118 charges), 2026-12-07; check
# them here with `.venv/bin/payfm -w W generate --seed S && .venv/bin/python bench/charges_digest.py W`.
set -uo pipefail
out=$1 digest0=$2 digest1=$3
shift 3
payfm() { python3 -c 'from payfm.cli.main import main; main()' "$@"; }
log() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$out/log.txt"; }
mkdir -p "$out"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 \
  >"$out/gpu.csv" 2>/dev/null &
smi=$!
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$out/log.txt"
python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__)' \
  | tee -a "$out/log.txt"
ws=$(mktemp -d)
cleanup() {
  kill "$smi" 2>/dev/null
  rm -rf "$ws"
}
trap cleanup EXIT
for seed in 0 1; do
  payfm -w "$ws/ws$seed" generate --seed "$seed" >/dev/null || exit 1
  got=$(python3 bench/charges_digest.py "$ws/ws$seed" | tee -a "$out/log.txt")
  want=$([ "$seed" = 0 ] && echo "$digest0" || echo "$digest1")
  if [[ $got != *"digest $want" ]]; then
    log "seed $seed: the world generated here ($got) differs from the expected digest $want:" \
      "stopping before any pretraining (compare the payfm code and the digest given; bench/charges_digest.py)"
    exit 1
  fi
done
for run in "$@"; do
  IFS=: read -r seed name seconds args <<<"$run"
  log "start $name on seed $seed: fm pretrain $args (at most $seconds s)"
  # shellcheck disable=SC2086  # args is a list of options
  timeout "$seconds" python3 -c 'from payfm.cli.main import main; main()' -w "$ws/ws$seed" fm pretrain \
    --name "$name" --fresh $args 2>>"$out/stderr.txt" | tee -a "$out/log.txt"
  log "end $name (exit ${PIPESTATUS[0]})"
  python3 - "$ws/ws$seed/fm/$name" <<'PY' | tee -a "$out/log.txt"
import json, sys
meta = json.load(open(sys.argv[1] + "/config.json"))
print(f"checkpoint: step {meta['step']}, charges {meta['charges']}, last loss {meta['losses'][-1]:.3f}")
PY
  tar -C "$ws/ws$seed/fm" -cf "$out/$name-seed$seed.tar" "$name"
done
