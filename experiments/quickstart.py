"""The quickstart: the whole RLHF pipeline on the built-in summarisation task, on a CPU,
with no download. Train the task tokenizer -> SFT a small policy from scratch on the
reference summaries -> a Bradley-Terry reward model on the preference pairs (from the SFT
backbone) -> RLOO (k = 4) against that reward model with the KL penalty -> evaluate the
SFT and the RLOO policy side by side (gold reward, win-rates, perplexity, diversity, KL,
appendix A curves; plots in <workdir>/plots):

    python -m rlhf_jax.main --config experiments/quickstart.py --workdir /tmp/rlhf_jax_quickstart

Variants (comma-separated): ppo, reinforce (moving-average baseline), vanilla_pg, raft,
dpo (offline, on the preference pairs, instead of RL); lora (the policy stage trains rank-8
adapters on every projection, the SFT frozen beneath them and serving as the KL reference;
a critic gets its own adapters on the same base); tiny (seconds; the tests' size).
Another seed: --set seed=1.
"""

import dataclasses

from rlhf_jax.experiment import (
    DataSection,
    ExperimentConfig,
    ModelSection,
    PreferenceSection,
    RLSection,
    TrainSection,
)
from rlhf_jax.pipeline import PipelineConfig
from rlhf_jax.train_step import OptimConfig

METHODS = ("rloo", "ppo", "reinforce", "vanilla_pg", "raft", "dpo")


def full() -> PipelineConfig:
    model = ModelSection(family="gpt2", d_model=128, n_layers=2, n_heads=4, d_ff=512, max_positions=64)
    data = DataSection(task="summarization", n_train=20000, n_test=200, max_prompt_len=48, max_completion_len=12)
    sft_steps, reward_steps = 1600, 1600  # each schedule decays over its stage's whole run
    # the reward model sees each comparison once (51,200 of 60,000): repeats taught it less content
    return PipelineConfig(
        name="quickstart",
        sft=ExperimentConfig(
            name="quickstart_sft",
            model=model,
            data=data,
            optim=OptimConfig(
                learning_rate=3e-3, schedule="cosine", warmup_steps=20, total_steps=sft_steps, end_lr_ratio=0.1
            ),
            train=TrainSection(
                kind="sft", steps=sft_steps, batch_size=32, log_every=200, save_every=400, prompt_loss_weight=0.3
            ),
        ),
        reward=ExperimentConfig(
            name="quickstart_reward",
            model=model,
            data=dataclasses.replace(data, n_train=60000),
            optim=OptimConfig(
                learning_rate=1e-3, schedule="cosine", warmup_steps=20, total_steps=reward_steps, end_lr_ratio=0.1
            ),
            train=TrainSection(kind="reward", steps=reward_steps, batch_size=32, log_every=100, save_every=200),
        ),
        policy=ExperimentConfig(
            name="quickstart_rloo",
            model=model,
            data=data,
            optim=OptimConfig(learning_rate=1e-4, warmup_steps=3, total_steps=100),
            train=TrainSection(kind="rl", steps=100, log_every=10, save_every=50),
            rl=RLSection(method="rloo", k=4, rollout_batch=64, minibatch=64, beta=0.05),
        ),
    )


def tiny(cfg: PipelineConfig) -> PipelineConfig:
    model = ModelSection(family="gpt2", d_model=32, n_layers=1, n_heads=2, d_ff=64, max_positions=128)
    data = DataSection(task="summarization", n_train=64, n_test=16, max_prompt_len=80, max_completion_len=16)

    def small(stage: ExperimentConfig, steps: int, **train) -> ExperimentConfig:
        optim = dataclasses.replace(stage.optim, warmup_steps=0, total_steps=max(steps, 1), learning_rate=1e-2)
        train = dataclasses.replace(stage.train, steps=steps, log_every=2, save_every=steps, **train)
        return dataclasses.replace(stage, name=stage.name + "_tiny", model=model, data=data, optim=optim, train=train)

    rl = dataclasses.replace(cfg.policy.rl, rollout_batch=8 * cfg.policy.rl.k, minibatch=8 * cfg.policy.rl.k)
    policy = dataclasses.replace(small(cfg.policy, 4, batch_size=8), rl=rl)
    return dataclasses.replace(
        cfg,
        name=cfg.name + "_tiny",
        sft=small(cfg.sft, 8, batch_size=8),
        reward=small(cfg.reward, 4, batch_size=8),
        policy=policy,
    )


def with_method(cfg: PipelineConfig, method: str) -> PipelineConfig:
    policy = cfg.policy
    if method == "dpo":
        policy = dataclasses.replace(
            policy,
            optim=OptimConfig(learning_rate=1e-4, warmup_steps=5, total_steps=60),
            train=TrainSection(kind="preference", steps=60, batch_size=32, log_every=10, save_every=30),
            preference=PreferenceSection(objective="dpo", beta=0.1),
        )
    elif method != "rloo":
        k = 4 if method == "raft" else 1
        rl = dataclasses.replace(policy.rl, method=method, k=k, whiten_advantages=method == "ppo")
        policy = dataclasses.replace(policy, rl=rl)
    return dataclasses.replace(
        cfg, name=f"quickstart_{method}", policy=dataclasses.replace(policy, name=f"quickstart_{method}")
    )


def with_lora(cfg: PipelineConfig) -> PipelineConfig:
    """The policy stage as LoRA: rank 8, alpha 16 on q, k, v, o, up, down (GPT-2 has no
    gate), at 10x the full fine-tuning learning rate (adapters start at zero effect)."""
    policy = cfg.policy
    model = dataclasses.replace(
        policy.model, lora_rank=8, lora_alpha=16.0, lora_targets=("q", "k", "v", "o", "up", "down")
    )
    optim = dataclasses.replace(policy.optim, learning_rate=10 * policy.optim.learning_rate)
    policy = dataclasses.replace(policy, name=policy.name + "_lora", model=model, optim=optim)
    return dataclasses.replace(cfg, name=cfg.name + "_lora", policy=policy)


def get_config(variant: str | None = None) -> PipelineConfig:
    parts = [p for p in (variant or "").split(",") if p]
    unknown = [p for p in parts if p not in METHODS + ("lora", "tiny")]
    methods = [p for p in parts if p in METHODS]
    if unknown or len(methods) > 1:
        raise ValueError(
            f"quickstart: unknown variant {variant!r}; known: {', '.join(METHODS)}, lora, tiny (comma-separated)"
        )
    cfg = with_method(full(), methods[0] if methods else "rloo")
    cfg = tiny(cfg) if "tiny" in parts else cfg
    return with_lora(cfg) if "lora" in parts else cfg
