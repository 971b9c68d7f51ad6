"""Trains the quickstart config in a child process for the trainer tests.

    python tests/scripts/train_digits.py [--kill-at-step N] [quickstart flags ...]

``--kill-at-step N`` sends SIGKILL to this process when the data for step N is requested,
i.e. mid-epoch, while checkpoints may still be being written.
"""

import os
import signal
import sys

from jsnn import recipes, run, train
from jsnn.config import parse_args


class _KillAt:
    """The data set's train batches, with SIGKILL at one step."""

    def __init__(self, batches, step):
        self.batches, self.step = batches, step

    def __getitem__(self, step):
        if step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.batches[step]


class _KillingDataset:
    def __init__(self, dataset, step):
        self._dataset, self._step = dataset, step

    def __getattr__(self, name):
        return getattr(self._dataset, name)

    def train(self, **kwargs):
        return _KillAt(self._dataset.train(**kwargs), self._step)


def main(argv):
    kill_at = None
    if argv[:1] == ["--kill-at-step"]:
        kill_at, argv = int(argv[1]), argv[2:]
    config, cluster = parse_args(argv, recipes.DIGITS, description=__doc__, default="digits")
    train.initialize_distributed(**cluster)
    dataset = run.build_dataset(config)
    if kill_at is not None:
        dataset = _KillingDataset(dataset, kill_at)
    run.run(config, dataset=dataset)


if __name__ == "__main__":
    main(sys.argv[1:])
