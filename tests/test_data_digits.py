"""The Dataset contract (step-indexed training batches, sharding, padded test batches) and the
bundled digits."""

import pickle
import re

import grain
import numpy as np
import pytest
from data_checks import assert_shards_match

import jsnn.data
from jsnn.data import Dataset


def _noisy(record, rng):
    """A random 'augmentation': the example id plus noise drawn from grain's generator."""
    return {"image": np.float32(record) + rng.random((2,), np.float32), "label": np.int32(record)}


def _plain(record):
    return {"image": np.full((2,), record, np.float32), "label": np.int32(record)}


def _toy(num_train=23, num_test=10):
    """Records are example ids, so batches show which examples they hold."""
    return Dataset("toy", 23, (2,), list(range(num_train)), list(range(num_test)), _noisy, _plain)


def test_digits_split_is_fixed_stratified_and_matches_load_digits():
    first, second = jsnn.data.get("digits"), jsnn.data.get("digits")
    assert (first.num_train, first.num_test, first.input_shape) == (1437, 360, (8, 8, 1))
    data = jsnn.data.load_digits()
    test = first.test(batch_size=360)[0]
    np.testing.assert_array_equal(test["image"], data["test_images"])
    np.testing.assert_array_equal(test["label"], data["test_labels"])
    np.testing.assert_array_equal(second.test(batch_size=360)[0]["image"], test["image"])
    train_labels = np.asarray(first.train_source.labels)
    np.testing.assert_allclose(
        np.bincount(train_labels) / first.num_train,
        np.bincount(test["label"]) / first.num_test,
        atol=0.01,
    )
    images = np.concatenate([data["train_images"], data["test_images"]]).reshape(1797, -1)
    assert len(np.unique(images, axis=0)) > 1700  # train and test are different digits
    assert images.min() == 0.0 and images.max() == 1.0


def test_train_is_step_indexed_deterministic_and_reshuffles_every_epoch():
    dataset = _toy()
    batch, steps = 5, 23 // 5
    assert dataset.steps_per_epoch(batch) == steps
    first = dataset.train(batch_size=batch, seed=7)
    again = dataset.train(batch_size=batch, seed=7)
    assert isinstance(first, grain.MapDataset)
    for step in (0, 3, 11, 1000):
        for key in ("image", "label"):
            np.testing.assert_array_equal(first[step][key], again[step][key])
    epochs = [
        np.concatenate([first[e * steps + s]["label"] for s in range(steps)]) for e in range(3)
    ]
    for order in epochs:
        assert len(order) == steps * batch == len(set(order.tolist()))  # each example once
        assert set(order.tolist()) <= set(range(23))
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])
    other_seed = dataset.train(batch_size=batch, seed=8)
    assert not np.array_equal(other_seed[0]["label"], first[0]["label"])
    batch0 = first[0]
    assert batch0["image"].dtype == np.float32 and batch0["label"].dtype == np.int32
    assert batch0["image"].shape == (batch, 2)
    np.testing.assert_array_equal(np.floor(batch0["image"][:, 0]), batch0["label"])

    # Augmentations are drawn per stream position: an example seen in two epochs differs.
    def images_by_example(epoch):
        batches = [first[epoch * steps + s] for s in range(steps)]
        return {
            int(label): image
            for b in batches
            for label, image in zip(b["label"], b["image"], strict=True)
        }

    noise = [images_by_example(0), images_by_example(1)]
    for example in set(noise[0]) & set(noise[1]):
        assert not np.array_equal(noise[0][example], noise[1][example])


def test_pipelines_pickle_for_grain_worker_processes():
    dataset = jsnn.data.get("digits")
    train, test = dataset.train(batch_size=8, seed=0), dataset.test(batch_size=7)
    for pipeline, index in ((train, 500), (test, len(test) - 1)):
        copy = pickle.loads(pickle.dumps(pipeline))
        for key, value in pipeline[index].items():
            np.testing.assert_array_equal(copy[index][key], value)


def test_union_of_process_shards_is_the_single_process_batch():
    assert_shards_match(_toy(num_train=40), batch_size=8, seed=3, steps=(0, 1, 4, 5, 9, 123))
    assert_shards_match(jsnn.data.get("digits"), batch_size=64, seed=0, steps=(0, 22, 23))


def test_test_batches_cover_every_example_once_with_padding_masked():
    dataset = _toy(num_test=10)
    for count in (1, 2):
        shards = [
            dataset.test(batch_size=4, process_index=h, process_count=count) for h in range(count)
        ]
        assert all(len(shard) == 3 for shard in shards)  # ceil(10 / 4) global batches
        seen = []
        for step in range(3):
            parts = [shard[step] for shard in shards]
            for part in parts:
                assert part["image"].shape == (4 // count, 2)
                assert part["mask"].dtype == np.float32
            labels = np.concatenate([p["label"] for p in parts])
            mask = np.concatenate([p["mask"] for p in parts])
            seen += labels[mask == 1].tolist()
            assert np.all(np.concatenate([p["image"] for p in parts])[mask == 0] == 0)
        assert seen == list(range(10))
    last = dataset.test(batch_size=4)[2]
    np.testing.assert_array_equal(last["mask"], [1, 1, 0, 0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0, "seed": 0}, "batch_size must be a positive integer, got 0"),
        ({"batch_size": 2.0, "seed": 0}, "batch_size must be a positive integer"),
        ({"batch_size": 24, "seed": 0}, "batch_size must be at most num_train=23"),
        ({"batch_size": 6, "seed": 0, "process_count": 4}, "divisible by process_count"),
        ({"batch_size": 4, "seed": 0, "process_count": 2, "process_index": 2}, "process_index"),
        ({"batch_size": 4, "seed": 0, "process_index": -1}, "process_index"),
        ({"batch_size": 4, "seed": 0, "process_count": 0}, "process_count"),
        ({"batch_size": 4, "seed": -1}, "seed must be an integer in [0, 2**32), got -1"),
        ({"batch_size": 4, "seed": 1.5}, "seed must be an integer"),
    ],
)
def test_bad_train_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _toy().train(**kwargs)


def test_bad_names_and_options_are_named():
    with pytest.raises(ValueError, match=r"name must be one of .*'digits'.*got 'digitz'"):
        jsnn.data.get("digitz")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['steps'\] for 'digits'"):
        jsnn.data.get("digits", steps=4)
    with pytest.raises(ValueError, match="no training augmentation is defined for digits"):
        jsnn.data.get("digits", augment=True)
    with pytest.raises(ValueError, match="must be divisible by process_count"):
        _toy().test(batch_size=3, process_count=2)
    with pytest.raises(ValueError, match="the test source is empty"):
        _toy(num_test=0)
    assert set(jsnn.data.names()) == {
        "digits",
        "digits_events",
        "cifar10",
        "cifar100",
        "mnist",
        "fashion_mnist",
        "imagenet",
        "cifar10_dvs",
        "nmnist",
        "dvs_gesture",
    }
