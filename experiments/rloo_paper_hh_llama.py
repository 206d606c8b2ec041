"""The RLOO paper's Anthropic HH-RLHF dialogue with Llama-7B (appendix C), on a v4-128 slice.

Variants: the pipeline's stages (sft, reward, rloo_k2, rloo_k4, raft_k2, raft_k4, reinforce,
vanilla_pg, ppo, dpo), each optionally with `,lora`. The settings, what we chose where the
paper is silent, and the launch commands (MODULE=hh_llama, SLICE=v4-128, MODEL=llama-7b,
DATA=hh; the data: Anthropic HH-RLHF's train.jsonl.gz / test.jsonl.gz (any subdirectories)):
experiments/rloo_paper_settings.py."""

from experiments.rloo_paper_settings import HH_LLAMA, paper_config
from rlhf_jax.experiment import ExperimentConfig


def get_config(variant: str | None = None) -> ExperimentConfig:
    return paper_config(HH_LLAMA, variant)
