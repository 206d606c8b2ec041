"""Built-in tasks, generated deterministically from a seed, each with a gold judge:
synthetic summarisation (TL;DR stand-in), multi-step arithmetic (exact ORM / PRM labels
and a verifier), and classification tasks of graded difficulty (weak-to-strong)."""
