#!/usr/bin/env bash
# alexnet_tf against its PyTorch peer on this CPU, runs alternating, then the tables.
#
#   bash benchmarks/cpu_compare.sh [OUT_DIR]          (from the checkout's root)
#
# For each setting (net, batch, dtype) it runs `python -m alexnet_tf.bench train` with the
# recipe's defaults, then `python -m benchmarks.torch_peer` (eager and torch.compile) on the same
# net, batch and dtype, ROUNDS times over (default 2), so that a slow spell of a shared
# machine falls on both; then the exported SavedModel (`bench export`, batch 32 and 1, in
# a TensorFlow Session as TF Serving and `alexnet_tf.serve` run it, and through
# tf.saved_model.load's signature) against the peer's inference, also alternating. `python -m benchmarks.compare` prints every run
# beside the peer's with the ratio of the bests. JSON lines go to OUT_DIR (default
# cpu_compare/); the environment's load average is printed before and after.
# Settings: ROUNDS, EXPORT_ROUNDS (default ROUNDS; 0 = no export table), SETTINGS
# ("net:batch:dtype ..."; a blank, SETTINGS=" ", times only the SavedModel against the
# peer's inference), STEPS, WARMUP, THREADS (both frameworks' threads; default all
# cores: on a machine that other jobs load, THREADS=1 keeps both clear of spin-waiting
# threads whose partner is descheduled, which slows PyTorch's OpenMP most).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-cpu_compare}
rounds=${ROUNDS:-2}
settings=${SETTINGS:-"paper:32:fp32 paper:32:bf16 quickstart:128:fp32 quickstart:128:bf16"}
steps=${STEPS:-10}
warmup=${WARMUP:-3}
export_rounds=${EXPORT_ROUNDS:-$rounds}
threads=${THREADS:-0}
mkdir -p "$out"
rm -f "$out"/*.jsonl
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TF_CPP_MIN_LOG_LEVEL=2
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); threads: $([ "$threads" = 0 ] && echo "all cores" || echo "$threads")"
lscpu | grep -E "^Model name|^CPU\(s\)|^Thread" || true
echo "flags: $(grep -o -w -E 'avx2|avx512f|avx512_bf16|amx_bf16|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')"
for round in $(seq "$rounds"); do
  for setting in $settings; do
    IFS=: read -r net batch dtype <<<"$setting"
    # the recipe's training step: several steps per host call, as `train` runs them
    python -m alexnet_tf.bench train "recipes/$net.py" --batch "$batch" --precision "$dtype" \
      --steps "$steps" --warmup "$warmup" --steps-per-loop "$steps" --threads "$threads" --out "$out" >/dev/null
    python -m benchmarks.torch_peer train --models "$net" --batches "$batch" --dtypes "$dtype" \
      --modes eager compile --steps "$steps" --warmup "$warmup" --threads "$threads" --out "$out" >/dev/null
    echo "round $round $setting done, load $(cut -d' ' -f1 /proc/loadavg)"
  done
  if [ "$round" -le "$export_rounds" ]; then
    for net in paper quickstart; do
      for runtime in session eager; do
        python -m alexnet_tf.bench export --recipe "recipes/$net.py" --batch 32 1 --threads "$threads" \
          --runtime "$runtime" --out "$out" >/dev/null
      done
      python -m benchmarks.torch_peer infer --models "$net" --batches 32 1 --steps 50 --warmup 5 \
        --threads "$threads" --out "$out" >/dev/null
    done
    echo "round $round export done, load $(cut -d' ' -f1 /proc/loadavg)"
  fi
done
python -m benchmarks.compare "$out" --target 1.0
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
