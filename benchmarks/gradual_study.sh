#!/usr/bin/env bash
# Gradual learning against traditional training at a scale a 2-core CPU can run: a 3x200 variational
# LSTM (the paper's `gl` model shrunk), several seeds per arm, then the report over the run folders.
#
#   PTB_DATA_DIR=/data/ptb bash benchmarks/gradual_study.sh /scratch/study
#
# Arms (equal epochs: every arm trains 3 x EPOCHS_PER_PHASE epochs; gradual spends its first two
# thirds on the shallower networks of phases 1 and 2, so it does less work per epoch):
#   gradual      3 phases of EPOCHS_PER_PHASE epochs (depth 1, 2, 3), learning rate reset per phase
#   traditional  3 x EPOCHS_PER_PHASE epochs on the full depth
# Both use the paper's rules: x0.85 on a rise of the validation perplexity, test at the best one.
#
# Every run is resumable: running the script again resumes the unfinished runs and skips the finished
# ones. Runs go PARALLEL at a time, each pinned to one core (taskset) at low priority (nice), so that
# their wall times compare. When all have finished, each run's config.json and results.json are
# copied to KEEP_DIR and the report draws the figure and tables from there.
#
# Environment: SEEDS (default "1 2 3"), EPOCHS_PER_PHASE (6), PARALLEL (2), PYTHON (python),
# KEEP_DIR (docs/study_runs), FIGURE_DIR (docs/figures).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS_DIR="${1:?usage: bash benchmarks/gradual_study.sh RUNS_DIR}"
SEEDS="${SEEDS:-1 2 3}"
EPOCHS_PER_PHASE="${EPOCHS_PER_PHASE:-6}"
PARALLEL="${PARALLEL:-2}"
PYTHON="${PYTHON:-python}"
KEEP_DIR="${KEEP_DIR:-docs/study_runs}"
FIGURE_DIR="${FIGURE_DIR:-docs/figures}"
: "${PTB_DATA_DIR:?set PTB_DATA_DIR to the folder with ptb.train.txt, ptb.valid.txt, ptb.test.txt}"
mkdir -p "$RUNS_DIR"

COMMON=(--model=gl --data_path="$PTB_DATA_DIR" --set=num_layers=3 --set=hidden_size=200
        --set=num_steps=20 --set=init_scale=0.1 --set=keep_prob_embed=0.7 --set=keep_output=0.7
        --set=keep_state=0.7)
TOTAL_EPOCHS=$((3 * EPOCHS_PER_PHASE))

arm_flags() {  # the flags that make an arm
  case "$1" in
    gradual) echo "--gradual --layer_epochs=$EPOCHS_PER_PHASE --max_epochs=$EPOCHS_PER_PHASE" ;;
    traditional) echo "--nogradual --max_epochs=$TOTAL_EPOCHS" ;;
  esac
}

run_one() {  # run_one ARM SEED CORE: trains (or resumes) one run; its console output goes to RUN.out
  local arm="$1" seed="$2" core="$3" name="$1-seed$2"
  local pin=() status
  if command -v taskset >/dev/null && [ "$PARALLEL" -gt 1 ]; then pin=(taskset -c "$core"); fi
  local started=$SECONDS
  # shellcheck disable=SC2046 (arm_flags is a list of flags)
  nice -n 19 "${pin[@]}" "$PYTHON" ptb_word_lm.py "${COMMON[@]}" $(arm_flags "$arm") --seed="$seed" \
      --save_path="$RUNS_DIR/$name" >>"$RUNS_DIR/$name.out" 2>&1 || status=$?
  echo "$name: exit ${status:-0} after $((SECONDS - started)) s" >>"$RUNS_DIR/wall_seconds.txt"
}

# Jobs in an order that balances the workers (a traditional run costs more than a gradual one).
JOBS=()
for seed in $SEEDS; do
  if [ $(( ${#JOBS[@]} / 2 % 2 )) -eq 0 ]; then JOBS+=("traditional $seed" "gradual $seed");
  else JOBS+=("gradual $seed" "traditional $seed"); fi
done

worker() {  # worker K: jobs K, K + PARALLEL, ... on core K
  local index
  for ((index = $1; index < ${#JOBS[@]}; index += PARALLEL)); do
    # shellcheck disable=SC2086 (a job is "ARM SEED")
    run_one ${JOBS[$index]} "$1"
  done
}

for ((worker_index = 0; worker_index < PARALLEL; worker_index++)); do worker "$worker_index" & done
wait

for job in "${JOBS[@]}"; do
  read -r arm seed <<<"$job"
  name="$arm-seed$seed"
  mkdir -p "$KEEP_DIR/$name"
  cp "$RUNS_DIR/$name/config.json" "$RUNS_DIR/$name/results.json" "$KEEP_DIR/$name/"
done
"$PYTHON" -m gradual_rnn report "$KEEP_DIR"/*/ --out "$FIGURE_DIR" --table_name=gradual_vs_traditional.md \
    --figure_name=gradual_vs_traditional.png
