#!/usr/bin/env bash
# Set up every worker of a TPU VM: copy this checkout (git archive of HEAD), install it
# with the pinned versions and JAX for TPU into a venv, and mount the Cloud Storage bucket
# with gcsfuse at /gcs/BUCKET, where `--workdir gs://BUCKET/...` points.
#   tpu/setup.sh --name rlhf --zone us-central2-b --bucket my-bucket [--project P] [--dry-run]
USAGE="tpu/setup.sh --name NAME --zone ZONE --bucket BUCKET [--project P] [--dry-run]"
# shellcheck source=tpu/common.sh
source "$(dirname "$0")/common.sh"
parse_args "$@"
[[ -n "$BUCKET" ]] || { echo "--bucket is required" >&2; usage; }

root="$(cd "$(dirname "$0")/.." && pwd)"
archive="${TMPDIR:-/tmp}/rlhf_jax-$NAME.tar.gz"
run git -C "$root" archive --format=tar.gz -o "$archive" HEAD
tpu_args
run gcloud compute tpus tpu-vm scp "$archive" "${TPU[0]}:rlhf_jax.tar.gz" "${TPU[@]:1}" --worker=all

install="set -e
mkdir -p $REMOTE_DIR && tar -xzf ~/rlhf_jax.tar.gz -C $REMOTE_DIR && cd $REMOTE_DIR
python3 -m venv .venv && . .venv/bin/activate
pip install -q -c constraints.txt -e '.[tpu]'
if ! command -v gcsfuse >/dev/null; then
  echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -cs) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
  sudo apt-get update -q && sudo apt-get install -yq gcsfuse
fi
sudo mkdir -p /gcs/$BUCKET && sudo chown \$USER /gcs/$BUCKET
mountpoint -q /gcs/$BUCKET || gcsfuse --implicit-dirs $BUCKET /gcs/$BUCKET"
on_workers all "$install"
