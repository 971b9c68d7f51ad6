"""Train a spiking CNN on scikit-learn's bundled digits: the main job, no download needed.

    python -m experiments.quickstart [--train.epochs 15] [--T 4] [--train.workdir runs/quickstart]

Prints progress and the test accuracy per epoch; writes ``config.json``, ``metrics.jsonl``,
TensorBoard logs, checkpoints and ``curves.png`` to the workdir, and resumes from it when run
again. ``--help`` lists every config field that can be overridden; ``--method.name dspike``
adds Dspike's temperature search.
"""

from __future__ import annotations

from collections.abc import Sequence

from jsnn import recipes, run


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    return run.main(argv, recipes.DIGITS, default="digits", description=__doc__.split("\n")[0])


if __name__ == "__main__":
    main()
