"""Evaluation as the RLHF papers report it: judges (gold, reward model, LM judge), and
metrics of a policy's completions (win-rate, reward, perplexity, diversity, length, KL,
entropy and probability mass per generation step), plots, and the policy report."""
