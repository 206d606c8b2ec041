# shellcheck shell=bash
# Shared by the tpu/ scripts: option parsing and `run`, which prints a command (--dry-run)
# or runs it. Each script sets USAGE and calls parse_args "$@" before using the options.

set -euo pipefail

# shellcheck disable=SC2034  # the options are read by the scripts that source this file
NAME="" ZONE="" PROJECT="" TYPE="" VERSION="tpu-ubuntu2204-base" BUCKET="" WORKER="0"
SPOT=0 DELETE=0 WAIT=0 DRY_RUN=0
REST=()
# shellcheck disable=SC2034,SC2088  # a tilde for the workers' shell to expand
REMOTE_DIR='~/rlhf_jax' LOG='~/rlhf_jax_run.log'

usage() {
  echo "usage: $USAGE" >&2
  exit 2
}

parse_args() {
  # shellcheck disable=SC2034
  while (($#)); do
    case "$1" in
      --name) NAME="${2:?--name needs a value}"; shift 2 ;;
      --zone) ZONE="${2:?--zone needs a value}"; shift 2 ;;
      --project) PROJECT="${2:?--project needs a value}"; shift 2 ;;
      --type) TYPE="${2:?--type needs a value}"; shift 2 ;;
      --version) VERSION="${2:?--version needs a value}"; shift 2 ;;
      --bucket) BUCKET="${2:?--bucket needs a value}"; shift 2 ;;
      --worker) WORKER="${2:?--worker needs a value}"; shift 2 ;;
      --spot) SPOT=1; shift ;;
      --delete) DELETE=1; shift ;;
      --wait) WAIT=1; shift ;;
      --dry-run) DRY_RUN=1; shift ;;
      -h | --help) usage ;;
      --) shift; REST=("$@"); break ;;
      *) echo "unknown option $1" >&2; usage ;;
    esac
  done
  [[ -n "$NAME" && -n "$ZONE" ]] || { echo "--name and --zone are required" >&2; usage; }
}

# One word, quoted for a shell where it needs to be.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Print the command (--dry-run) or run it.
run() {
  if ((DRY_RUN)); then
    local first=1 word
    for word in "$@"; do
      ((first)) || printf ' '
      quote "$word"
      first=0
    done
    printf '\n'
  else
    "$@"
  fi
}

# gcloud's options naming the TPU VM.
tpu_args() {
  TPU=("$NAME" "--zone=$ZONE")
  if [[ -n "$PROJECT" ]]; then TPU+=("--project=$PROJECT"); fi
}

# Run a shell command on the TPU VM's workers ("all" or a worker number).
on_workers() {
  local workers="$1" command="$2"
  tpu_args
  run gcloud compute tpus tpu-vm ssh "${TPU[@]}" "--worker=$workers" "--command=$command"
}
