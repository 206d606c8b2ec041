"""Built-in tasks, generated deterministically from a seed, each with its gold reward:
synthetic summarisation (TL;DR stand-in), multi-step arithmetic (exact ORM / PRM labels
and a verifier), and classification tasks of graded difficulty (weak-to-strong).
`data.tasks` makes them (and the real data sets) runnable tasks."""
