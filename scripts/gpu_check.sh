#!/usr/bin/env bash
# GPU check on a CUDA card (about 6 minutes in all).
#   bash scripts/gpu_check.sh            # writes under $OUT (default /tmp/gpu_check) and results/bench/
# Deliberately no `set -e`: one failing step must not lose the others; every step logs to $OUT/*.log.
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT" results/bench
export WANDB_MODE=offline
step() {  # step NAME TIMEOUT_S CMD...
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/steps.log"
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc=$rc in $(( $(date +%s) - t0 ))s" | tee -a "$OUT/steps.log"
  tail -n 5 "$OUT/$name.log"
}
step card 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step env 30 "$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"
# 1. the benchmark on the card: depth sweep (all nets and methods), MNIST paper step (synthetic data: no
#    dataset files travel), adjoint solvers at equal accuracy. Files: results/bench/gpu-<card>-quick.{md,json}
step bench 240 "$PY" -m jfb.bench --device cuda --quick --synthetic --paper-batches 30 --out results/bench
# 2. a short real training of every method on the card (synthetic data with the real shapes)
for ds in mnist cifar10; do
  for m in jfb ift unrolled neumann explicit; do
    step "train-$ds-$m" 60 "$PY" -m jfb.train experiment=paper/$ds method=$m dataset.source=synthetic \
      dataset.synthetic_size=[5000,1000] trainer.epochs=1 trainer.max_batches=50 logger=none device=cuda \
      trainer.progress=false trainer.checkpoint=false paths.output_root="$OUT/runs"
  done
done
# collect the training summaries (card, time, memory, accuracy) next to the benchmark
"$PY" - "$OUT" <<'PYEOF' > "$OUT/collect.log" 2>&1
import json, sys, glob, os, re
from jfb.training.summary import read_summary
out = sys.argv[1]
rows = []
for f in sorted(glob.glob(os.path.join(out, "runs", "*", "summary.json"))):
    s = read_summary(f)
    rows.append({k: getattr(s, k) for k in ("run_name", "status", "device_name", "method_label", "dataset", "train_time_s",
                                             "peak_memory_mb", "saved_for_backward_mb", "fwd_iters_mean", "test_acc", "reason")})
card = next((r["device_name"] for r in rows if r.get("device_name")), "unknown")
stem = "gpu-" + re.sub(r"[^A-Za-z0-9]+", "-", card).strip("-").lower() + "-train"
json.dump({"card": card, "runs": rows}, open(f"results/bench/{stem}.json", "w"), indent=1)
with open(f"results/bench/{stem}.md", "w") as fh:
    fh.write(f"# Short trainings on {card} (synthetic data, 50 batches, 1 epoch)\n\n")
    fh.write("| run | status | train s | peak MB | saved MB | fwd iters |\n|---|---|---:|---:|---:|---:|\n")
    for r in rows:
        f = lambda v: "n/a" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))
        fh.write(f"| {r['run_name']} | {r['status']} | {f(r['train_time_s'])} | {f(r['peak_memory_mb'])} | "
                 f"{f(r['saved_for_backward_mb'])} | {f(r['fwd_iters_mean'])} |\n")
print("wrote", stem)
PYEOF
cat "$OUT/collect.log"
cp results/bench/gpu-* "$OUT"/ 2>/dev/null
echo "done; logs in $OUT, tables in results/bench/gpu-*"
