#!/usr/bin/env bash
# gradual_rnn beside its peers, in interleaved rounds (peer, ours, peer, ours, ...), then the shared
# harness's GEMM bounds and summary table. Run from the repository root:
#
#   TFPY=.venv/bin/python TORCHPY=.venv-torch/bin/python bash benchmarks/run_interleaved.sh bench-results
#
# Env: SHARED_BENCH (../shared/bench), ROUNDS_SMALL / ROUNDS_MEDIUM / ROUNDS_LARGE (3 each),
# GEMM_ROUNDS (1), EVAL_ROUNDS (3), TF_PEERS=1 to also time the shared Keras and unrolled-TF peers.
# Writes OUTDIR/peers.jsonl (training), OUTDIR/eval.jsonl (test pass at batch 1), OUTDIR/gemm.jsonl,
# OUTDIR/bounds.jsonl, OUTDIR/summary.md and OUTDIR/run.log.
set -u
OUT=${1:-bench-results}
SHARED=${SHARED_BENCH:-../shared/bench}
TFPY=${TFPY:-python3}
TORCHPY=${TORCHPY:-.venv-torch/bin/python}
mkdir -p "$OUT"
LOG=$OUT/run.log
OURS="$TFPY -m gradual_rnn.benchmark"

keep_json() {  # keep_json FILE CMD... : append the command's JSON lines to FILE, the rest to the log
  local file=$1; shift
  local lines
  lines=$("$@" 2>>"$LOG" | grep '^{')
  if [ -n "$lines" ]; then echo "$lines" >>"$file"; echo "$lines" | cut -c1-150
  else echo "FAILED: $*" | tee -a "$LOG"; fi
}

round() {  # round CONFIG STEPS WARMUP
  local a="--config $1 --steps $2 --warmup $3"
  keep_json "$OUT/peers.jsonl" "$TORCHPY" "$SHARED/torch_lstm.py" $a
  if [ "${TF_PEERS:-0}" = 1 ]; then
    keep_json "$OUT/peers.jsonl" "$TFPY" "$SHARED/tf_keras_lstm.py" $a
    keep_json "$OUT/peers.jsonl" "$TFPY" "$SHARED/tf_unrolled_lstm.py" $a --jit 1
  fi
  keep_json "$OUT/peers.jsonl" $OURS $a
  keep_json "$OUT/peers.jsonl" $OURS $a --variational
  keep_json "$OUT/peers.jsonl" $OURS $a --precision mixed_bfloat16
}

eval_round() {  # the references' test pass for small: batch 1, one step per window, 82,429 windows
  keep_json "$OUT/eval.jsonl" "$TORCHPY" benchmarks/torch_eval_b1.py --config small --threads 1
  keep_json "$OUT/eval.jsonl" "$TORCHPY" benchmarks/torch_eval_b1.py --config small --chunk 512
  keep_json "$OUT/eval.jsonl" $OURS --config small --eval_only --eval_windows 82429
}

date -u +"start %FT%TZ" | tee -a "$LOG"
for r in $(seq "${GEMM_ROUNDS:-1}"); do
  echo "gemm round $r"
  for b in numpy tf tf_eager; do "$TFPY" "$SHARED/gemm_bench.py" --backend $b 2>>"$LOG" | grep '^{' >>"$OUT/gemm.jsonl"; done
  "$TORCHPY" "$SHARED/gemm_bench.py" --backend torch 2>>"$LOG" | grep '^{' >>"$OUT/gemm.jsonl"
done
for r in $(seq "${ROUNDS_SMALL:-3}"); do echo "small round $r"; round small 50 5; done
for r in $(seq "${ROUNDS_MEDIUM:-3}"); do echo "medium round $r"; round medium 20 3; done
for r in $(seq "${ROUNDS_LARGE:-3}"); do echo "large round $r"; round large 8 2; done
for r in $(seq "${EVAL_ROUNDS:-3}"); do echo "eval round $r"; eval_round; done
date -u +"end %FT%TZ" | tee -a "$LOG"
"$TFPY" "$SHARED/flops_bound.py" "$OUT/gemm.jsonl" >"$OUT/bounds.jsonl"
"$TFPY" "$SHARED/summarize.py" "$OUT/peers.jsonl" "$OUT/bounds.jsonl" >"$OUT/summary.md"
"$TFPY" benchmarks/summarize_extra.py "$OUT" >>"$OUT/summary.md"
cat "$OUT/summary.md"
