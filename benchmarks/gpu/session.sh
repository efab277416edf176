#!/usr/bin/env bash
# Everything the lent GPU machine is for in this project, as one device call (about 9 minutes):
#   1. the CUDA tests (tests/test_device.py -m gpu): generation, the eval suite and every toy trainer on the GPU,
#      reproducible from their seed, resuming exactly;
#   2. benchmarks/speed.py with real-size architectures (random weights, nothing to download) on the GPU, for
#      benchmarks/RESULTS.md;
#   3. benchmarks/gpu/align_at_scale.py: latent gradient alignment of the early image tower at a large batch,
#      each kept snapshot judged on 58 held-out prompts (prompt seed 11) beside the shipped tower.
# First, here (with the package registry): bash benchmarks/gpu/fetch_wheels.sh. Then the device tool's run with
# command "bash benchmarks/gpu/session.sh", carry [".whl"], timeout_s 600. What comes back (8 files at most):
# gpu.txt (the machine and, at its end, the speed table), tests.log, train.log, judge.log, align_judged.json,
# align_train.log.jsonl and the two best towers.
# TESTS_S, SPEED_S, TRAIN_S, JUDGE_S, STEPS, BATCH override the phase limits (s) and the training's size.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/pixgen_gpu_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "could not install the carried wheels (run benchmarks/gpu/fetch_wheels.sh, carry .whl)"; exit 3; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; python3 -c "import torch; print(torch.__version__)"; } \
  > "$OUT/gpu.txt" 2>&1
start=$(date +%s)
timeout "${TESTS_S:-150}" python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_device.py 2>&1 | tee "$OUT/tests.log" | tail -15
echo "tests: $(( $(date +%s) - start )) s"
timeout "${SPEED_S:-60}" python3 benchmarks/speed.py --model imagenet_f16_16384 --random-weights --clip ViT-B-32 \
  --size 256 512 --cutouts 32 64 --steps 20 --device cuda >> "$OUT/gpu.txt" 2>&1
echo "speed: rc $?, $(( $(date +%s) - start )) s"; tail -6 "$OUT/gpu.txt"
timeout "${TRAIN_S:-180}" python3 benchmarks/gpu/align_at_scale.py train --work /tmp/align --device cuda \
  --steps "${STEPS:-600}" --batch "${BATCH:-384}" --keep-every 100 > "$OUT/train.log" 2>&1
echo "train: rc $?, $(( $(date +%s) - start )) s, kept: $(ls /tmp/align/snapshots 2>/dev/null | tr '\n' ' ')"
timeout "${JUDGE_S:-160}" python3 benchmarks/gpu/align_at_scale.py judge --work /tmp/align --out "$OUT" --device cuda \
  --seeds 0,1 --workers 14 --max-snapshots 3 > "$OUT/judge.log" 2>&1
echo "judge: rc $?, $(( $(date +%s) - start )) s"
tail -3 "$OUT/judge.log"
