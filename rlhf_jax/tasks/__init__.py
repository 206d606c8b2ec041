"""Built-in tasks, generated deterministically from a seed, each with a gold judge:
synthetic summarisation (TL;DR stand-in), multi-step arithmetic (exact ORM / PRM labels
and a verifier), and classification tasks of graded difficulty (weak-to-strong)."""

from rlhf_jax.tasks import arithmetic, summarization


def gold_judge(task: str):
    """The task's gold reward of a completion: fn(record, completion_text) -> float."""
    if task == "summarization":
        return lambda record, text: summarization.gold_reward(record["document"], text)
    if task == "arithmetic":
        return lambda record, text: arithmetic.verifiable_reward(record["prompt"], text)
    raise ValueError(f"no gold judge for task {task!r}")
