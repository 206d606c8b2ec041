"""The RLOO paper's TL;DR summarisation with Pythia-6.9B (appendix C), on a v4-64 slice.

Variants: the pipeline's stages (sft, reward, rloo_k2, rloo_k4, raft_k2, raft_k4, reinforce,
vanilla_pg, ppo, dpo), each optionally with `,lora`. The settings, what we chose where the
paper is silent, and the launch commands (MODULE=tldr_pythia, SLICE=v4-64,
MODEL=pythia-6.9b, DATA=tldr; the data: the TL;DR files: sft/ (train/valid/test.jsonl of the
SFT split) and comparisons/ (the human comparison batches)):
experiments/rloo_paper_settings.py."""

from experiments.rloo_paper_settings import TLDR_PYTHIA, paper_config
from rlhf_jax.experiment import ExperimentConfig


def get_config(variant: str | None = None) -> ExperimentConfig:
    return paper_config(TLDR_PYTHIA, variant)
