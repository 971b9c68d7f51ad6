"""Event-driven learning (Zhu et al., NeurIPS 2022): spike-time gradients on the paper's data sets.

    python -m experiments.event_driven [--dataset digits] [--train.epochs 15] [--T 5]
        [--method.input-grad-scale 0.85] [--method.supervise last_rising] [--train.workdir DIR]

``--dataset`` picks the recipe ``event_driven_<dataset>`` of :data:`jsnn.recipes.EVENT_DRIVEN`:
``digits`` and ``digits_events`` (bundled, no download), ``mnist``, ``fashion_mnist``,
``nmnist``, ``cifar10``, ``cifar100`` (the authors' network, T, time constants, spike counts
and optimizer for each; tfds and tonic data sets, see the README for preparing them). Trains
through the common trainer (checkpoints, resume, metrics, progress, plots); ``--help`` lists
every field that can be overridden.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from jsnn import recipes, run

DATASETS = tuple(name.removeprefix("event_driven_") for name in recipes.EVENT_DRIVEN)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    first = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    first.add_argument("--dataset", choices=DATASETS, default="digits")
    known, rest = first.parse_known_args(argv)
    return run.main(
        ["--recipe", f"event_driven_{known.dataset}", *rest],
        recipes.EVENT_DRIVEN,
        default="event_driven_digits",
        description=__doc__.split("\n")[0],
    )


if __name__ == "__main__":
    main()
