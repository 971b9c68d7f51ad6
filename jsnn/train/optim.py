"""Optimizers and learning-rate schedules from a :class:`~jsnn.train.TrainConfig`, with optax."""

from __future__ import annotations

import optax

from jsnn.train.config import TrainConfig

__all__ = ["learning_rate", "optimizer"]


def learning_rate(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """Linear warm-up over ``warmup_epochs`` from ``warmup_from * lr``, then cosine decay to 0
    by the last step (or flat)."""
    total = config.epochs * steps_per_epoch
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total - 1)
    if config.schedule == "constant":
        after = optax.constant_schedule(config.lr)
    else:
        after = optax.cosine_decay_schedule(config.lr, decay_steps=max(total - warmup, 1))
    if warmup == 0:
        return after
    ramp = optax.linear_schedule(config.warmup_from * config.lr, config.lr, warmup)
    return optax.join_schedules([ramp, after], boundaries=[warmup])


def optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with momentum (weight decay added to the gradient, as PyTorch's SGD does), Adam
    (the same coupled decay) or AdamW (decoupled decay); optional global-norm clipping first."""
    schedule = learning_rate(config, steps_per_epoch)
    if config.optimizer == "adamw":
        core = optax.adamw(schedule, weight_decay=config.weight_decay)
    else:
        if config.optimizer == "sgd":
            step = optax.sgd(schedule, momentum=config.momentum, nesterov=config.nesterov)
        else:
            step = optax.adam(schedule)
        core = optax.chain(optax.add_decayed_weights(config.weight_decay), step)
    if config.grad_clip is None:
        return core
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), core)
