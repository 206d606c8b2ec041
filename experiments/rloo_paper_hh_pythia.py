"""The RLOO paper's Anthropic HH-RLHF dialogue with Pythia-6.9B (appendix C; the settings
and what we chose where the paper is silent: experiments/rloo_paper_settings.py).

Variants: sft, reward, rloo_k2, rloo_k4, raft_k2, raft_k4, reinforce, vanilla_pg, ppo,
dpo, each optionally with `,lora` (`rloo_k4,lora`). Each stage is one run; later
stages start from earlier ones' workdirs. On a TPU pod
slice (tpu/README.md; gs:// paths are the bucket's gcsfuse mount on every worker), with
the base model's HF directory (EleutherAI/pythia-6.9b) and Anthropic HH-RLHF's
train.jsonl.gz / test.jsonl.gz (any subdirectories) copied to the bucket:

    B=gs://$BUCKET/rloo_paper/hh_pythia
    tpu/create.sh --name rlhf --zone $ZONE --type v4-64
    tpu/setup.sh --name rlhf --zone $ZONE --bucket $BUCKET
    run() { tpu/launch.sh --name rlhf --zone $ZONE --wait -- --config experiments/rloo_paper_hh_pythia.py:$1 \
        --workdir $B/$1 --set data.source_dir=gs://$BUCKET/data/hh "${@:2}"; }
    run sft --set model.init_from=gs://$BUCKET/models/pythia-6.9b
    run reward --set model.init_from=$B/sft
    run rloo_k4 --set model.init_from=$B/sft --set rl.reward_model=$B/reward
    run dpo --set model.init_from=$B/sft

The same command on one GPU host: python -m rlhf_jax.main --config
experiments/rloo_paper_hh_pythia.py:rloo_k4 --workdir DIR --set ... (docs/pods.md).
Check a stage's shapes at full size first, without a model or data:
python -m rlhf_jax.main ... --dry-run; that it fits the slice (libtpu, no TPU): ... --dry-run
--target v4-64 (tpu/fit.py has compiled every stage for it: docs/pods.md)."""

from experiments.rloo_paper_settings import HH_PYTHIA, paper_config
from rlhf_jax.experiment import ExperimentConfig


def get_config(variant: str | None = None) -> ExperimentConfig:
    return paper_config(HH_PYTHIA, variant)
