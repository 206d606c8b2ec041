"""RL with a verifiable reward on the built-in arithmetic task: reward 1 for the exact final
answer, 0 otherwise (no judge, no length lever). Prompts of mixed depth (1-3 operations,
`tasks.arithmetic.RLVR`) so that difficulty varies by prompt; the SFT stage imitates
solutions that slip half the time, so that its k samples per prompt disagree. First the
SFT policy, then any RL method from it (default GRPO; --set rl.method=dapo, gspo, ...):

    python -m rlhf_jax.main --config experiments/rlvr_arithmetic.py:sft --workdir /tmp/rlhf_jax_rlvr_sft
    python -m rlhf_jax.main --config experiments/rlvr_arithmetic.py --workdir /tmp/rlhf_jax_rlvr \\
        --set model.init_from=/tmp/rlhf_jax_rlvr_sft

Variants: `sft`; `tiny` and `sft,tiny` (seconds; the tests' size: `a + b` with a, b in 1-3,
`tasks.arithmetic.SUMS`: nine problems, SFT solutions right 40% of the time, an SFT policy
right about 22% at T = 1); a method of METHODS (`grpo`, `rloo_k4`, `dpo`, ...; with `tiny`)
runs the whole pipeline, SFT then that method, as the verifiable-reward study does.
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

VARIANTS = ("sft", "tiny")


def sft(tiny: bool) -> ExperimentConfig:
    if tiny:
        return ExperimentConfig(
            name="rlvr_arithmetic_sft_tiny",
            model=ModelSection(family="llama", d_model=32, n_layers=1, n_heads=2, d_ff=64, max_positions=64),
            data=DataSection(task="arithmetic_sums", n_train=256, n_test=128, max_prompt_len=16, max_completion_len=16),
            optim=OptimConfig(learning_rate=1e-2, total_steps=60),
            train=TrainSection(kind="sft", steps=60, batch_size=16, log_every=20, save_every=60),
        )
    return ExperimentConfig(
        name="rlvr_arithmetic_sft",
        model=ModelSection(family="llama", d_model=128, n_layers=2, n_heads=4, d_ff=512, max_positions=96),
        data=DataSection(task="arithmetic_rlvr", n_train=8000, n_test=200, max_prompt_len=24, max_completion_len=48),
        optim=OptimConfig(learning_rate=3e-3, schedule="cosine", warmup_steps=20, total_steps=600, end_lr_ratio=0.1),
        train=TrainSection(kind="sft", steps=600, batch_size=32, log_every=50, save_every=300),
    )


def rl(tiny: bool) -> ExperimentConfig:
    base = sft(tiny)
    if tiny:
        return dataclasses.replace(
            base,
            name="rlvr_arithmetic_tiny",
            optim=OptimConfig(learning_rate=3e-3, total_steps=1000),
            train=TrainSection(kind="rl", steps=40, log_every=4, save_every=20),
            rl=RLSection(method="grpo", k=4, rollout_batch=64, minibatch=64, beta=0.0),
        )
    return dataclasses.replace(
        base,
        name="rlvr_arithmetic",
        optim=OptimConfig(learning_rate=1e-4, warmup_steps=3, total_steps=100),
        train=TrainSection(kind="rl", steps=100, log_every=5, save_every=25),
        rl=RLSection(method="grpo", k=4, rollout_batch=64, minibatch=64, beta=0.0),
    )


# the verifiable-reward study's methods: name -> (rl.method, k); dpo trains offline on judged pairs
METHODS = {
    "rloo_k2": ("rloo", 2), "rloo_k4": ("rloo", 4), "raft_k2": ("raft", 2), "raft_k4": ("raft", 4),
    "reinforce": ("reinforce", 1), "vanilla_pg": ("vanilla_pg", 1), "ppo": ("ppo", 1), "dpo": ("dpo", 1),
    "grpo": ("grpo", 4), "dr_grpo": ("dr_grpo", 4), "dapo": ("dapo", 4), "gspo": ("gspo", 4),
    "cispo": ("cispo", 4), "reinforce_pp": ("reinforce_pp", 4),
}  # fmt: skip
MINIBATCHES = 4  # gradient steps on each rollout batch (every online method): PPO's clip and its kin can act


def pipeline(name: str = "grpo", tiny: bool = False) -> PipelineConfig:
    """SFT, then `name` of METHODS from it against the exact-answer reward (no reward
    model: reward_source task). Every online method samples rollout_batch completions an
    iteration (rollout_batch / k prompts) for train.steps iterations (DAPO, whose dynamic
    sampling draws 3 batches an iteration, a third as many) and takes MINIBATCHES gradient
    steps on each batch; DPO trains on the SFT's two samples of as many prompts as
    the online methods' completions make pairs (the same number of judged completions)."""
    if name not in METHODS:
        raise ValueError(f"rlvr_arithmetic: unknown method {name!r}; known: {', '.join(METHODS)}")
    method, k = METHODS[name]
    base = rl(tiny)
    labelled = 0
    if method == "dpo":
        steps = base.train.steps
        policy = dataclasses.replace(
            base,
            name=f"rlvr_arithmetic_{name}",
            optim=dataclasses.replace(base.optim, total_steps=steps),
            train=TrainSection(kind="preference", steps=steps, batch_size=32 if not tiny else 16,
                               log_every=base.train.log_every, save_every=base.train.save_every),
            preference=PreferenceSection(objective="dpo", beta=0.1),
        )  # fmt: skip
        labelled = min(base.rl.rollout_batch * base.train.steps // 2, base.data.n_train)
    else:
        minibatch = base.rl.rollout_batch // MINIBATCHES
        rl_section = dataclasses.replace(base.rl, method=method, k=k, minibatch=minibatch,
                                         whiten_advantages=method == "ppo")  # fmt: skip
        if rl_section.estimator.critic:  # no reward model to start the critic from: the policy's backbone
            rl_section = dataclasses.replace(rl_section, critic_from="policy")
        policy = dataclasses.replace(base, name=f"rlvr_arithmetic_{name}", rl=rl_section)
        if rl_section.draws > 1:  # dynamic sampling (DAPO) samples draws x the batch an iteration: fewer iterations
            steps = max(1, base.train.steps // rl_section.draws)
            train = dataclasses.replace(base.train, steps=steps, save_every=min(base.train.save_every, steps))
            policy = dataclasses.replace(policy, train=train, optim=dataclasses.replace(base.optim, total_steps=steps))
    return PipelineConfig(
        name=f"rlvr_arithmetic_{name}",
        sft=sft(tiny),
        policy=policy,
        reward_source="task",
        labelled_pairs=labelled,
    )


def get_config(variant: str | None = None) -> ExperimentConfig | PipelineConfig:
    chosen = set(filter(None, (variant or "").split(",")))
    methods = chosen & set(METHODS)
    if chosen - set(VARIANTS) - methods or len(methods) > 1 or (methods and "sft" in chosen):
        raise ValueError(f"rlvr_arithmetic: unknown variant {variant!r}; known: {', '.join(VARIANTS)}, or one "
                         f"method of {', '.join(METHODS)} (the whole pipeline; with tiny)")  # fmt: skip
    if methods:
        return pipeline(methods.pop(), "tiny" in chosen)
    return (sft if "sft" in chosen else rl)("tiny" in chosen)
