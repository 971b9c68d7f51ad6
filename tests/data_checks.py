"""Checks shared by the data pipeline tests."""

import numpy as np


def assert_shards_match(dataset, batch_size, seed, steps):
    """The local batches of 2 and of 4 processes, joined in process order, are exactly the
    single-process global batch at each step (same examples, same augmented pixels)."""
    for count in (2, 4):
        for step in steps:
            whole = dataset.train(batch_size=batch_size, seed=seed)[step]
            parts = [
                dataset.train(
                    batch_size=batch_size, seed=seed, process_index=h, process_count=count
                )[step]
                for h in range(count)
            ]
            for key in whole:
                np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
