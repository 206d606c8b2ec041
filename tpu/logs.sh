#!/usr/bin/env bash
# Follow a run's output on one worker (0 by default: the one that logs metrics).
#   tpu/logs.sh --name rlhf --zone us-central2-b [--worker N] [--dry-run]
USAGE="tpu/logs.sh --name NAME --zone ZONE [--project P] [--worker N] [--dry-run]"
# shellcheck source=tpu/common.sh
source "$(dirname "$0")/common.sh"
parse_args "$@"

on_workers "$WORKER" "tail -n 200 -F $LOG"
