#!/usr/bin/env bash
# gradual_rnn beside its PyTorch peer in interleaved rounds (peer, ours x3, GEMM bound, peer, ours x3,
# GEMM bound, ...), then the overhead-bound configs `test` and `gl8` (peer, ours), then the test pass
# of `small` at batch 1, then a markdown summary. Run from the repository root:
#
#   PTB_DATA_DIR=/path/to/ptb TFPY=python TORCHPY=python bash benchmarks/run_interleaved.sh bench-results
#
# Env: TFPY, the Python with gradual_rnn installed (default python3); TORCHPY, the Python with torch
# (default: TFPY, e.g. after pip install -e ".[bench]"); PTB_DATA_DIR, the corpus both sides read;
# ROUNDS_SMALL / ROUNDS_MEDIUM / ROUNDS_LARGE / ROUNDS_TEST / ROUNDS_GL8 (3 each), EVAL_ROUNDS (3);
# VARIANTS, our variants at small, medium and large (default "float32 variational bf16"; any subset,
# e.g. VARIANTS=float32 for a shorter run). `test` and `gl8` always run ours in float32 with K (windows
# per compiled call) chosen by the trainer's rule (--windows_per_call 0); 0 rounds skip a config.
# Writes OUTDIR/cpu.txt, OUTDIR/peers.jsonl (training), OUTDIR/gemm.jsonl (the shape-aware GEMM bound
# of small, medium and large, once per round), OUTDIR/eval.jsonl (test pass at batch 1),
# OUTDIR/summary.md and OUTDIR/run.log.
set -u
OUT=${1:-bench-results}
TFPY=${TFPY:-python3}
TORCHPY=${TORCHPY:-$TFPY}
VARIANTS=${VARIANTS:-float32 variational bf16}
mkdir -p "$OUT"
LOG=$OUT/run.log
OURS="$TFPY benchmarks/ptb_benchmark.py"
PEER="$TORCHPY benchmarks/torch_peer.py"

cpu_report() {  # the CPU model and the vector extensions that decide GEMM and bfloat16 speed
  local model extensions
  model=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
  extensions=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | tr ' ' '\n' |
               grep -E '^(avx2|fma|avx512.*|amx.*)$' | sort -u | tr '\n' ' ')
  echo "cpu: ${model:-unknown}, $(nproc) logical cores"
  echo "vector extensions: ${extensions:-none of avx2/fma/avx512*/amx*}"
}

keep_json() {  # keep_json FILE CMD... : append the command's JSON lines to FILE, the rest to the log
  local file=$1; shift
  local lines
  lines=$("$@" 2>>"$LOG" | grep '^{')
  if [ -n "$lines" ]; then echo "$lines" >>"$file"; echo "$lines" | cut -c1-150
  else echo "FAILED: $*" | tee -a "$LOG"; fi
}

has_variant() {  # has_variant NAME : whether VARIANTS lists NAME
  case " $VARIANTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac
}

round() {  # round CONFIG STEPS WARMUP : the peer, our variants, then the GEMM bound of CONFIG
  local a="--config $1 --steps $2 --warmup $3"
  keep_json "$OUT/peers.jsonl" $PEER $a
  if has_variant float32; then keep_json "$OUT/peers.jsonl" $OURS $a; fi
  if has_variant variational; then keep_json "$OUT/peers.jsonl" $OURS $a --variational; fi
  if has_variant bf16; then keep_json "$OUT/peers.jsonl" $OURS $a --precision mixed_bfloat16; fi
  keep_json "$OUT/gemm.jsonl" "$TFPY" benchmarks/gemm_bound.py --config "$1"
}

round_overhead() {  # round_overhead CONFIG STEPS WARMUP : the peer, then ours with the trainer's K
  local a="--config $1 --steps $2 --warmup $3"
  keep_json "$OUT/peers.jsonl" $PEER $a
  keep_json "$OUT/peers.jsonl" $OURS $a --windows_per_call 0
}

eval_round() {  # the references' test pass for small: batch 1, one step per window, 82,429 windows
  keep_json "$OUT/eval.jsonl" "$TORCHPY" benchmarks/torch_eval_b1.py --config small --threads 1
  keep_json "$OUT/eval.jsonl" "$TORCHPY" benchmarks/torch_eval_b1.py --config small --chunk 512
  keep_json "$OUT/eval.jsonl" $OURS --config small --eval_only --eval_windows 82429
}

cpu_report | tee "$OUT/cpu.txt" | tee -a "$LOG"
"$TORCHPY" -c "import torch; print('torch', torch.__version__)" 2>>"$LOG" | tee -a "$LOG" ||
  { echo "TORCHPY=$TORCHPY cannot import torch: pip install -e '.[bench]' or set TORCHPY" | tee -a "$LOG"; exit 1; }
date -u +"start %FT%TZ" | tee -a "$LOG"
for r in $(seq "${ROUNDS_SMALL:-3}"); do echo "small round $r"; round small 50 5; done
for r in $(seq "${ROUNDS_MEDIUM:-3}"); do echo "medium round $r"; round medium 20 3; done
for r in $(seq "${ROUNDS_LARGE:-3}"); do echo "large round $r"; round large 8 2; done
for r in $(seq "${ROUNDS_TEST:-3}"); do echo "test round $r"; round_overhead test 2000 200; done
for r in $(seq "${ROUNDS_GL8:-3}"); do echo "gl8 round $r"; round_overhead gl8 100 10; done
for r in $(seq "${EVAL_ROUNDS:-3}"); do echo "eval round $r"; eval_round; done
date -u +"end %FT%TZ" | tee -a "$LOG"
"$TFPY" benchmarks/summarize_extra.py "$OUT" >"$OUT/summary.md"
cat "$OUT/summary.md"
