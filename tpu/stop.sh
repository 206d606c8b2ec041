#!/usr/bin/env bash
# Stop a run on every worker with SIGTERM: each process finishes its step, saves a
# checkpoint and exits (rerun tpu/launch.sh with the same arguments to resume).
# --delete then deletes the TPU VM.
#   tpu/stop.sh --name rlhf --zone us-central2-b [--delete] [--dry-run]
USAGE="tpu/stop.sh --name NAME --zone ZONE [--project P] [--delete] [--dry-run]"
# shellcheck source=tpu/common.sh
source "$(dirname "$0")/common.sh"
parse_args "$@"

# The bracket keeps the pattern from matching this command's own shell.
pattern='python -m [r]lhf_jax.main'
on_workers all "pkill -TERM -f '$pattern'; while pgrep -f '$pattern' >/dev/null; do sleep 5; done"
if ((DELETE)); then
  tpu_args
  run gcloud compute tpus tpu-vm delete "${TPU[@]}" --quiet
fi
