#!/usr/bin/env bash
# Issue #17 runs (docs/results.md), from the repository root: today's kaggle_docs recipe vs context dropout vs dropout + a mixed instruction source, on the embedded model.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
PY=.venv/bin/python
K=../shared/data/kaggle_docs
M="--set model=embedded:gemma-3-270m"
SRC="--set data.source=$K/kaggle_docs_QA_v3.json --set data.max_records=400"
TRAIN="--set train.grad_accum=1 --set train.epochs=1 --set train.gradient_checkpointing=false"
EVAL="--set eval.max_new_tokens=64 --set eval.batch_size=16"
log() { echo "[$(date +%T)] $*"; }

log prepare
$PY scripts/prepare_data.py --recipe kaggle_docs $M $SRC --set data.test_source=$K/kaggle_docs_QA_v2.json --out data/k17 > /dev/null
$PY scripts/prepare_data.py --recipe kaggle_docs $M $SRC --set data.test_source=asset:kaggle_instructions.jsonl --out data/k17_instr > /dev/null
$PY scripts/prepare_data.py --recipe kaggle_docs $M $SRC --set data.test_source=$K/kaggle_docs_QA_v2.json --set data.context_dropout=0.3 --out data/k17_drop > /dev/null
$PY scripts/prepare_data.py --recipe kaggle_docs $M $SRC --set data.test_source=$K/kaggle_docs_QA_v2.json --set data.context_dropout=0.3 \
  --set data.mix_source=../shared/data/chinese_qa/alpaca_zh_demo.json --set data.mix_format=alpaca --set data.mix_share=0.2 --out data/k17_mix > /dev/null
cmp data/k17/train.jsonl data/k17_instr/train.jsonl && log "train split identical with either test file"

for v in today:k17 drop:k17_drop mix:k17_mix; do
  name=${v%%:*}; data=${v##*:}
  log "train $name"
  $PY scripts/train_qlora.py --recipe kaggle_docs $M --set data.dir=data/$data $TRAIN --out runs/k17/$name --overwrite > runs/k17/train_$name.log 2>&1
done

for v in today drop mix; do
  for e in ctx:k17:100:false noctx:k17:100:true instr:k17_instr:0:false; do
    IFS=: read tag data n noctx <<< "$e"
    out=runs/k17/$v/eval_$tag
    if [ "$v" != today ]; then mkdir -p $out/partial; cp runs/k17/today/eval_$tag/partial/base.* $out/partial/; fi  # the base's answers, reused by content key
    log "eval $v $tag"
    $PY scripts/evaluate.py --recipe kaggle_docs $M --set data.dir=data/$data $EVAL --set eval.max_examples=$n \
      --set eval.without_context=$noctx --set eval.min_n=10 --adapter runs/k17/$v --compare base --out $out > runs/k17/eval_${v}_$tag.log 2>&1
  done
done
log done
