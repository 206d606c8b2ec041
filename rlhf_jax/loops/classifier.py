"""Fine-tuning a binary classifier, a scalar head on a transformer, on soft labels: every
training run of the weak-to-strong study (`rlhf_jax.studies.weak_to_strong`), in memory.

An example is one sequence x or a pair (x_a, x_b) of sequences that share a prompt:

    logit        s = r(x)                      one sequence
                 s = r(x_a) - r(x_b)           a pair (P(a preferred) = sigmoid(s): Bradley-Terry)
    classes      p = softmax([0, s]) = (1 - sigmoid(s), sigmoid(s))
    loss         CE(p, q) to soft targets q (gold one-hot, a weak model's probabilities, or
                 their hardened argmax), or the auxiliary confidence loss
                 CE(p, (1 - a_t) q + a_t h(p)), a_t = a_max min(1, t / warmup)
                 (`losses.weak_to_strong`)

`fit` starts the head at zero (`zero_head`), runs `steps` AdamW steps on shuffled batches
(every epoch a new order) and returns the trained parameters; `predict` gives p for every
example. One compiled step per model and objective serves every run (a study fine-tunes
dozens of models of a few sizes).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import config as config_lib
from rlhf_jax.data.batching import pad_left, token_ids
from rlhf_jax.losses.weak_to_strong import aux_confidence_objective, aux_confidence_weight, soft_cross_entropy
from rlhf_jax.train_step import OptimConfig, make_optimizer


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """AdamW (cosine decay after a linear warm-up over warmup_frac of the steps) on
    batches of batch_size; aux_alpha > 0: the auxiliary confidence loss, its weight warmed
    up over aux_warmup_frac of the steps (Burns et al.: 0.75 and 20%)."""

    steps: int = 300
    batch_size: int = 32
    learning_rate: float = 3e-4
    warmup_frac: float = 0.1
    aux_alpha: float = 0.0
    aux_warmup_frac: float = 0.2

    def __post_init__(self):
        config_lib.check_numbers(self)
        if self.steps < 1 or self.batch_size < 1 or not self.learning_rate > 0:
            raise ValueError(f"FitConfig: steps, batch_size and learning_rate must be positive ({self})")
        if not (0 <= self.aux_alpha <= 1 and 0 <= self.warmup_frac <= 1 and 0 <= self.aux_warmup_frac <= 1):
            raise ValueError(f"FitConfig: aux_alpha, warmup_frac and aux_warmup_frac must be in [0, 1] ({self})")

    def optim(self) -> OptimConfig:
        warmup = int(self.warmup_frac * self.steps)
        return OptimConfig(learning_rate=self.learning_rate, schedule="cosine", warmup_steps=warmup,
                           total_steps=self.steps, end_lr_ratio=0.1)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Left-padded token ids of N examples of K sequences (K = 1, or 2 for pairs)."""

    tokens_NxKxT: np.ndarray
    mask_NxKxT: np.ndarray

    def __len__(self) -> int:
        return self.tokens_NxKxT.shape[0]

    def take(self, rows) -> Inputs:
        return Inputs(self.tokens_NxKxT[rows], self.mask_NxKxT[rows])


def encode(tokenizer, prompts: list[str], completions: list[tuple[str, ...]], length: int, eos: bool) -> Inputs:
    """Each prompt followed by each of its completions (tokenised apart, as the SFT data
    are, so that a pretrained model sees its own token boundaries), EOS after each
    completion if `eos`; an error names the first example longer than `length`."""
    K = len(completions[0])
    if any(len(c) != K for c in completions):
        raise ValueError("classifier.encode: every example needs the same number of completions")
    prompt_ids = token_ids(tokenizer, list(prompts))
    seqs = []
    for k in range(K):
        ids = token_ids(tokenizer, [c[k] for c in completions])
        seqs.append([p + c + ([tokenizer.eos_token_id] if eos else []) for p, c in zip(prompt_ids, ids, strict=True)])
    for k, rows in enumerate(seqs):
        long = [i for i, s in enumerate(rows) if len(s) > length]
        if long:
            raise ValueError(f"classifier.encode: example {long[0]} (completion {k}) has {len(rows[long[0]])} tokens, "
                             f"over the length {length}; {len(long)} such")  # fmt: skip
    pads = [pad_left(rows, length, tokenizer.pad_token_id) for rows in seqs]
    return Inputs(np.stack([t for t, _ in pads], 1), np.stack([m for _, m in pads], 1))


def zero_head(params):
    """The params with the score head at zero, as a fine-tune starts (Burns et al.'s code
    starts its linear head so): every example starts at p = (1/2, 1/2), and the labels, not
    a random projection of the features, set the direction that training follows. With a
    random head, the confidence loss hardens that projection's side of the median from its
    first steps and can lock a student into the inverted classifier."""
    return {**params, "score": jnp.zeros_like(params["score"])}


def logits_Bx2(model, params, tokens_BxKxT, mask_BxKxT):
    """[0, s] per example: s = r(x), or r(x_a) - r(x_b) for a pair."""
    B, K, T = tokens_BxKxT.shape
    r_BxK = model.rewards(params, tokens_BxKxT.reshape(B * K, T), mask_BxKxT.reshape(B * K, T)).reshape(B, K)
    s_B = r_BxK[:, 0] if K == 1 else r_BxK[:, 0] - r_BxK[:, 1]
    return jnp.stack([jnp.zeros_like(s_B), s_B], axis=-1).astype(jnp.float32)


_COMPILED: dict = {}


def _compiled(model, fit: FitConfig):
    """(optimizer, step) for one model shape and objective; cached by the model's config,
    so every run of one size shares them (models of one config are the same functions of
    their params)."""
    key = (model.cfg, model.head, fit)
    if key not in _COMPILED:
        _COMPILED[key] = _compile(model, fit)
    return _COMPILED[key]


def _compile(model, fit: FitConfig):
    optimizer = make_optimizer(fit.optim())
    aux_warmup = int(fit.aux_warmup_frac * fit.steps)

    def loss_fn(params, tokens, mask, targets, t):
        logits = logits_Bx2(model, params, tokens, mask)
        if fit.aux_alpha > 0:
            return aux_confidence_objective(logits, targets, aux_confidence_weight(t, fit.aux_alpha, aux_warmup))[0]
        return soft_cross_entropy(logits, targets)

    def step(params, opt_state, tokens, mask, targets, t):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens, mask, targets, t)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return jax.tree.map(jnp.add, params, updates), opt_state, loss

    return optimizer, jax.jit(step, donate_argnums=(0, 1))


def fit(model, params, inputs: Inputs, targets_Nx2: np.ndarray, cfg: FitConfig, seed: int):
    """(trained params, mean loss of the last tenth of the steps), from `params` with the
    head at zero. The input params are copied first (the step donates its buffers): the
    caller's stay usable."""
    if len(inputs) != len(targets_Nx2) or targets_Nx2.shape[1:] != (2,):
        raise ValueError(f"classifier.fit: {len(inputs)} inputs, targets of shape {targets_Nx2.shape}; need [N, 2]")
    if cfg.batch_size > len(inputs):
        raise ValueError(f"classifier.fit: batch_size={cfg.batch_size} above the {len(inputs)} examples")
    optimizer, step = _compiled(model, cfg)
    params = zero_head(jax.tree.map(jnp.copy, params))
    opt_state = optimizer.init(params)
    rng = np.random.default_rng(seed)
    per_epoch = len(inputs) // cfg.batch_size
    targets = np.asarray(targets_Nx2, np.float32)
    losses = []
    for t in range(cfg.steps):
        if t % per_epoch == 0:
            order = rng.permutation(len(inputs))
        rows = order[(t % per_epoch) * cfg.batch_size : (t % per_epoch + 1) * cfg.batch_size]
        params, opt_state, loss = step(params, opt_state, inputs.tokens_NxKxT[rows], inputs.mask_NxKxT[rows],
                                       targets[rows], jnp.asarray(t, jnp.int32))  # fmt: skip
        if t >= cfg.steps - max(1, cfg.steps // 10):
            losses.append(loss)
    return params, float(np.mean(jax.device_get(losses)))


def predict(model, params, inputs: Inputs, batch: int = 256) -> np.ndarray:
    """[N, 2] class probabilities, `batch` examples per call (the last batch padded, so
    that one program serves every call)."""
    key = (model.cfg, model.head, "probs")
    if key not in _COMPILED:
        _COMPILED[key] = jax.jit(lambda params, t, m: jax.nn.softmax(logits_Bx2(model, params, t, m), -1))
    probs = _COMPILED[key]
    out = []
    for start in range(0, len(inputs), batch):
        rows = np.arange(start, min(start + batch, len(inputs)))
        padded = np.concatenate([rows, np.full(batch - len(rows), rows[-1])])
        part = probs(params, inputs.tokens_NxKxT[padded], inputs.mask_NxKxT[padded])
        out.append(np.asarray(part)[: len(rows)])
    return np.concatenate(out)


def accuracy(probs_Nx2: np.ndarray, labels_N: np.ndarray) -> float:
    """Share of examples whose more probable class is the label (ties count as class 0)."""
    return float(np.mean((probs_Nx2[:, 1] > probs_Nx2[:, 0]).astype(int) == np.asarray(labels_N)))
