#!/bin/bash
# Runs candidates one after another: train (lab/ae_design/train.py) then score (evaluate.py).
# Each line of the queue file: NAME CANDIDATE [train.py options...]; lines starting with # are skipped;
# NAME p_*: a probe, trained only (its log's val PSNR judges it).
#   [EVAL_OPTS="--seed7-clips 20"] nohup lab/ae_design/queue.sh QUEUE_FILE > ~/emo-runs/ae/logs/queue.log 2>&1 &
set -u
export OMP_NUM_THREADS=1
cd "$(dirname "$0")/../.."
while read -r name candidate opts; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  out=~/emo-runs/ae/$name
  if [[ ! -f $out/training.json ]]; then
    echo "$(date) train $name"
    resume=""; [[ -f $out/state.pt ]] && resume="--resume"
    python lab/ae_design/train.py --candidate "$candidate" --out "$out" $opts $resume < /dev/null > ~/emo-runs/ae/logs/$name.train.log 2>&1 || { echo "train $name failed"; continue; }
  fi
  if [[ $name != p_* && ! -f lab/ae_design/results/$name.json ]]; then  # p_*: probes, judged on val PSNR only
    echo "$(date) eval $name"
    python lab/ae_design/evaluate.py "$out/model" --name "$name" ${EVAL_OPTS:-} < /dev/null > ~/emo-runs/ae/logs/$name.eval.log 2>&1 || echo "eval $name failed"
    grep -v Warn ~/emo-runs/ae/logs/$name.eval.log | tail -3
  fi
done < "$1"
echo "$(date) queue done"
