#!/usr/bin/env bash
# Create a TPU VM or pod slice (every worker gets the same VM image).
#   tpu/create.sh --name rlhf --zone us-central2-b --type v4-64 [--version IMAGE] [--project P] [--spot] [--dry-run]
USAGE="tpu/create.sh --name NAME --zone ZONE --type ACCELERATOR_TYPE [--version IMAGE] [--project P] [--spot] [--dry-run]"
# shellcheck source=tpu/common.sh
source "$(dirname "$0")/common.sh"
parse_args "$@"
[[ -n "$TYPE" ]] || { echo "--type is required (e.g. v4-8, v4-64, v5litepod-16)" >&2; usage; }

tpu_args
args=(gcloud compute tpus tpu-vm create "${TPU[@]}" "--accelerator-type=$TYPE" "--version=$VERSION")
if ((SPOT)); then args+=(--spot); fi
run "${args[@]}"
