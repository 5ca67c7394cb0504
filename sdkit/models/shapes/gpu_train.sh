#!/usr/bin/env bash
# Train the embedded shapes model on one GPU in under 9 minutes, from the repository root:
#
#   bash sdkit/models/shapes/gpu_train.sh            # writes under $OUT (default ./runs/gpu)
#
# On the lent GPU machine (torch + transformers, no diffusers): put the diffusers wheel in .whl/ (see
# /work/.library/device/README.md) and name .whl in carry; this script installs it into /tmp/site.
# Outputs (at most 8 files, each < 16 MiB, at most one folder down, as the device tool returns):
#   $OUT/train.log  metrics.json  losses.jsonl  curve.jsonl  shapes-model.tar.part-aa, -ab (the exported folder)
# Unpack here with:  cat shapes-model.tar.part-* | tar -x -C DEST    (gives DEST/model/...)
# Resume a run across GPU windows: keep the last window's outputs in a folder of the working tree, e.g. runs/v2 with
# model/ (unpacked), losses.jsonl and curve.jsonl, name it in carry, and set RESUME=runs/v2: the run continues from
# those fp16 EMA weights at the step they record (optimizer re-warmed), and the files come back extended.
# --pause-at-budget makes the window's end pause the stage (checkpoint + resumable export) instead of finishing it,
# and the learning-rate schedule then follows --unet-steps over all windows:
#   BUDGET=480 EXTRA="--image-size 128 --init-from sdkit/models/shapes/weights --skip-controlnet \
#     --unet-steps 40000 --eval-every 500 --pause-at-budget" bash sdkit/models/shapes/gpu_train.sh     # window 1
#   RESUME=runs/v2 BUDGET=480 EXTRA="--image-size 128 --skip-controlnet --unet-steps 40000 --eval-every 500 \
#     --pause-at-budget" bash sdkit/models/shapes/gpu_train.sh                                          # window 2...
# Train only new ControlNets on the shipped text-to-image weights (how the shipped ControlNets were made, 5.4 min):
#   BUDGET=369 EXTRA="--init-from sdkit/models/shapes/weights --init-stage controlnet --fresh-controlnets \
#     --warmup 100" bash sdkit/models/shapes/gpu_train.sh
# The tokenizer needs open-clip, which the GPU image lacks, so add it afterwards, on this machine:
#   python -m sdkit.models.shapes.export --add-tokenizer DEST/model
# and, when the VAE was retrained, refit its linear preview factors (a frozen VAE keeps them):
#   python -m sdkit.models.shapes.rgb_factors --folder DEST/model
set -u
OUT=${OUT:-runs/gpu}
BUDGET=${BUDGET:-465}  # seconds of training + evaluation + export; Python start and packing come on top
mkdir -p "$OUT"
PY=${PY:-python3}
if ! $PY -c "import diffusers" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
WORK=/tmp/shapes-run  # checkpoints (~150 MB) stay on the machine
rm -rf "$WORK"
RESUME_FLAG=""
if [ -n "${RESUME:-}" ]; then
  mkdir -p "$WORK" && cp -r "$RESUME"/. "$WORK"/ && rm -f "$WORK/checkpoint.pt"
  RESUME_FLAG="--resume"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout -k 5 $((BUDGET + 45)) $PY -m sdkit.models.shapes.train --out "$WORK" --device "${DEVICE:-cuda}" \
  --time-budget-s "$BUDGET" --checkpoint-every-s 1000 $RESUME_FLAG ${EXTRA:-} 2>&1 | grep --line-buffered -v -i "warn" | tee "$OUT/train.log"
for f in metrics.json losses.jsonl curve.jsonl; do cp "$WORK/$f" "$OUT/" 2>/dev/null || true; done
if [ -d "$WORK/model" ]; then
  tar -C "$WORK" -cf - model | split -b 15m - "$OUT/shapes-model.tar.part-"
fi
ls -la "$OUT"
