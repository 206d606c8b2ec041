#!/usr/bin/env bash
# Start the same run on every worker of a TPU VM; JAX discovers the workers
# (--distributed). The output goes to ~/rlhf_jax_run.log on each worker (tpu/logs.sh).
# Detached by default; --wait stays until it ends.
#   tpu/launch.sh --name rlhf --zone us-central2-b [--wait] [--dry-run] -- \
#       --config experiments/rloo_paper_tldr_pythia.py:rloo_k4 --workdir gs://BUCKET/run [--set k=v ...]
USAGE="tpu/launch.sh --name NAME --zone ZONE [--project P] [--wait] [--dry-run] -- --config ... --workdir ... [--set ...]"
# shellcheck source=tpu/common.sh
source "$(dirname "$0")/common.sh"
parse_args "$@"
((${#REST[@]})) || { echo "give the run's arguments after --" >&2; usage; }

words=""
for word in "${REST[@]}"; do words+=" $(quote "$word")"; done
start="cd $REMOTE_DIR && . .venv/bin/activate && python -m rlhf_jax.main --distributed$words"
if ((WAIT)); then
  on_workers all "$start 2>&1 | tee $LOG"
else
  on_workers all "nohup bash -c $(quote "$start") > $LOG 2>&1 < /dev/null &"
fi
