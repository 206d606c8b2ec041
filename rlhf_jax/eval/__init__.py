"""Evaluation as the RLHF papers report it: judges (gold, reward model, LM judge), metrics
of a policy's completions (win-rate, reward, perplexity, diversity, length, KL, entropy and
probability mass per generation step), plots, and `policies`: the one evaluation path that
every loop, the pipeline and the studies report through."""
