"""Offline preference training (train.kind "preference"): DPO, IPO, CPO, ORPO, SimPO on
the task's (prompt, chosen, rejected) pairs and KTO on their unpaired view (chosen =
desirable, rejected = undesirable), with the objectives of `losses.preference`.

The reference policy (preference.reference, or the starting policy) is frozen; its
sequence log-probs for each batch come from one compiled forward before the step (the
reference-free objectives skip it). KTO's reference point z0 uses mismatched pairs: the
completion of the next row of the batch with each prompt, as TRL builds them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.batches import KTOBatch
from rlhf_jax.data import batching
from rlhf_jax.experiment import ExperimentConfig
from rlhf_jax.loops.common import Loop, Trained, build_model, evaluate, fixed_data_loop, held_out_report
from rlhf_jax.loops.data import TaskData
from rlhf_jax.losses.preference import OBJECTIVES, completion_logps, kto_loss, preference_loss
from rlhf_jax.models import lora
from rlhf_jax.models.hf import load_hf
from rlhf_jax.models.transformer import run_as
from rlhf_jax.workdir import checkpoint_dir


def kto_rows(data: TaskData, rows, split: str = "train") -> KTOBatch:
    """Each pair gives a desirable (chosen) and an undesirable (rejected) example; the
    KL examples pair prompt i with completion i + 1 (cyclically) of the same batch."""
    enc = data.train if split == "train" else data.test
    prompts = [enc.fields["prompt"][r] for r in rows] * 2
    completions = [enc.fields["chosen"][r] for r in rows] + [enc.fields["rejected"][r] for r in rows]
    desirable = np.concatenate([np.ones(len(rows)), np.zeros(len(rows))]).astype(np.float32)
    pad = data.tokenizer.pad_token_id
    tokens, mask, cmask = batching.join(prompts, completions, data.P, data.C, pad)
    shifted = completions[1:] + completions[:1]
    kl_tokens, kl_mask, kl_cmask = batching.join(prompts, shifted, data.P, data.C, pad)
    zeros = np.zeros(len(prompts), np.float32)
    return KTOBatch(tokens, mask, cmask, desirable, zeros, kl_tokens, kl_mask, kl_cmask, zeros)


def reference_filler(model, ref_params, kto: bool):
    """batch -> the batch with the reference's sequence log-probs filled in."""

    @jax.jit
    def fill(batch):
        seq = lambda t, m, c: completion_logps(model, ref_params, t, m, c)[0]  # noqa: E731
        if kto:
            return batch.replace(
                ref_logps_B=seq(batch.tokens_BxT, batch.mask_BxT, batch.completion_mask_BxT),
                kl_ref_logps_B=seq(batch.kl_tokens_BxT, batch.kl_mask_BxT, batch.kl_completion_mask_BxT),
            )
        return batch.replace(
            ref_chosen_logps_B=seq(batch.chosen_tokens_BxT, batch.chosen_mask_BxT, batch.chosen_completion_mask_BxT),
            ref_rejected_logps_B=seq(
                batch.rejected_tokens_BxT, batch.rejected_mask_BxT, batch.rejected_completion_mask_BxT
            ),
        )

    return fill


def preference(cfg: ExperimentConfig, data: TaskData, mesh) -> Loop:
    """Train the policy on preference pairs; report held-out loss, preference accuracy
    and a sampled evaluation against the reference (gold reward, KL, win-rate)."""
    pcfg = cfg.preference.loss_config()
    model, params = build_model(cfg, len(data.tokenizer), mesh)
    if cfg.preference.reference:
        ref_model, ref_params = load_hf(
            checkpoint_dir(cfg.preference.reference), mesh=mesh, scan_layers=cfg.model.scan_layers
        )
        ref_model = run_as(ref_model, attention=cfg.model.attention)
        if ref_model.cfg.vocab_size != model.cfg.vocab_size:
            raise ValueError(f"preference.reference={cfg.preference.reference}: vocabulary differs from the policy's")
    elif lora.has_adapters(params):  # the same base, adapters off (shared: a LoRA base is never donated)
        ref_model, ref_params = model, lora.without_adapters(params)
    else:
        ref_model, ref_params = model, jax.tree.map(jnp.copy, params)
    kto = not OBJECTIVES[pcfg.objective].paired  # unpaired completions (KTO)
    fill = reference_filler(ref_model, ref_params, kto) if pcfg.needs_reference else (lambda b: b)
    loss_fn = functools.partial(kto_loss if kto else preference_loss, cfg=pcfg, model=model)

    def make(rows, split="train"):
        host = (lambda local: kto_rows(data, local, split)) if kto else (lambda local: data.batch(local, split))
        return fill(mesh_lib.put_rows(host, rows, mesh))

    def report(trained: Trained) -> dict:
        params = trained.state.params
        test = evaluate(loss_fn, params, lambda rows: make(rows, "test"), len(data.test.kept), cfg.train.batch_size)
        summary = {"objective": pcfg.objective, "train": trained.last, "held_out": test}
        named = {"policy": params, "reference": ref_params} if ref_model is model else {"policy": params}
        if data.task.judge is not None:  # sampled completions judged by the task's gold reward
            summary["test"] = held_out_report(cfg, data, model, named, ref_params, mesh)
        return summary

    return fixed_data_loop(cfg, mesh, model, params, loss_fn, make, len(data.train.kept), report)
