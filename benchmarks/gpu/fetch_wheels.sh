#!/usr/bin/env bash
# Fetch, on a machine with the package registry, the wheels that pixgen needs and the lent GPU machine's image
# lacks (its Python 3.12 has torch, torchvision, timm, typer, imageio, safetensors, tqdm, pytest...; see
# /work/.library/device/KINDS.md). They go to .whl/ in the repository root, which git ignores through
# .git/info/exclude; name .whl in the device call's carry. About 13 MB. Then: benchmarks/gpu/session.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  open_clip_torch==3.3.0 omegaconf==2.4.0 kornia==0.9.0 kornia_rs==0.2.0 ftfy==6.3.1 wcwidth==0.9.4 timm==1.0.31
ls -la .whl
