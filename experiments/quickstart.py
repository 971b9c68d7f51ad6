"""Train a small spiking CNN on the bundled digits with the core API, end to end.

    python -m experiments.quickstart [--epochs 15] [--steps 4] [--batch-size 64] [--seed 0]

Direct encoding repeats each image over T steps; conv and linear layers run on the folded B*T
batch; tdBN and LIF neurons with the Dspike surrogate; the loss is the cross-entropy of the mean
output over time (Dspike Eq. 3).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jsnn
from jsnn.data import load_digits


class SpikingDigitsNet(nnx.Module):
    """conv3x3(32) - tdBN - LIF - avgpool2 - linear(10), on ``[B, T, 8, 8, 1]`` inputs."""

    def __init__(self, *, rngs: nnx.Rngs, channels: int = 32, classes: int = 10):
        self.conv = jsnn.TimeDistributed(nnx.Conv(1, channels, (3, 3), use_bias=False, rngs=rngs))
        self.norm = jsnn.TDBatchNorm(channels)
        self.neurons = jsnn.LIF()
        self.readout = jsnn.TimeDistributed(nnx.Linear(channels * 16, classes, rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:
        spikes = self.neurons(self.norm(self.conv(x)))
        batch, steps = spikes.shape[:2]
        pooled = nnx.avg_pool(
            spikes.reshape(batch * steps, *spikes.shape[2:]), (2, 2), strides=(2, 2)
        )
        return self.readout(pooled.reshape(batch, steps, -1))


def loss_fn(model: SpikingDigitsNet, images: jax.Array, labels: jax.Array, steps: int):
    outputs = model(jsnn.encoding.direct(images, steps))
    loss = jsnn.losses.mean_output_cross_entropy(outputs, labels)
    accuracy = jnp.mean(jsnn.losses.mean_over_time(outputs).argmax(-1) == labels)
    return loss, accuracy


@nnx.jit(static_argnames="steps")
def train_step(model, optimizer, images, labels, steps):
    grad_fn = nnx.value_and_grad(loss_fn, has_aux=True)
    (loss, accuracy), grads = grad_fn(model, images, labels, steps)
    optimizer.update(model, grads)
    return loss, accuracy


@nnx.jit(static_argnames="steps")
def eval_step(model, images, labels, steps):
    return loss_fn(model, images, labels, steps)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--steps", type=int, default=4, help="time steps T")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    data = load_digits()
    train_images, train_labels = data["train_images"], data["train_labels"]
    model = SpikingDigitsNet(rngs=nnx.Rngs(args.seed))
    optimizer = nnx.Optimizer(model, optax.adam(args.lr), wrt=nnx.Param)
    rng = np.random.default_rng(args.seed)
    batches = len(train_images) // args.batch_size
    print(f"jsnn quickstart: digits, T={args.steps}, {batches} batches/epoch on {jax.devices()}")

    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        order = rng.permutation(len(train_images))
        model.train()
        losses, accuracies = [], []
        for i in range(batches):
            index = order[i * args.batch_size : (i + 1) * args.batch_size]
            loss, accuracy = train_step(
                model, optimizer, train_images[index], train_labels[index], args.steps
            )
            losses.append(loss)
            accuracies.append(accuracy)
        loss, accuracy = float(np.mean(losses)), float(np.mean(accuracies))
        seconds = time.perf_counter() - start
        model.eval()
        _, test_accuracy = eval_step(model, data["test_images"], data["test_labels"], args.steps)
        print(
            f"epoch {epoch:3d}/{args.epochs}  loss {loss:.4f}  train acc {accuracy:.4f}  "
            f"test acc {float(test_accuracy):.4f}  "
            f"{batches * args.batch_size / seconds:,.0f} samples/s"
        )
    print(f"final test accuracy: {float(test_accuracy):.4f}")
    return float(test_accuracy)


if __name__ == "__main__":
    main()
