"""Pure loss functions. Each objective is a function of log-probabilities and rewards
(hand-checkable); each `*_loss(params, batch, cfg, model)` wraps one with the model's
forward and returns (loss, metrics)."""
