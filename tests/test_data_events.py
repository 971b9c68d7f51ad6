"""Event pipelines on synthetic events, and the embedded digits event set (simulated saccades)."""

import re
import socket
import sys

import numpy as np
import pytest
import tonic
from data_checks import assert_shards_match

import jsnn.data
from jsnn.data.events import EventFrames, events_to_frames, resize_frames
from jsnn.data.saccades import SaccadeCamera, simulate_event_camera


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _events(sensor_size, n, seed, dtype=tonic.datasets.DVSGesture.dtype):
    """``n`` random events over one second on a ``(W, H, P)`` sensor, sorted by time."""
    rng = np.random.default_rng(seed)
    events = np.zeros(n, dtype)
    events["x"] = rng.integers(0, sensor_size[0], n)
    events["y"] = rng.integers(0, sensor_size[1], n)
    events["t"] = np.sort(rng.integers(0, 1_000_000, n))
    events["p"] = rng.integers(0, 2, n)
    return events


class Recordings(list):
    """A list of ``(events, label)`` with tonic's ``targets``, counting record reads."""

    def __init__(self, records):
        super().__init__(records)
        self.targets = [label for _, label in records]
        self.reads = 0

    def __getitem__(self, index):
        self.reads += 1
        return super().__getitem__(index)


@pytest.fixture(scope="module")
def cifar10_dvs_source():
    """100 synthetic recordings per class, with CIFAR10-DVS's sensor and dtype."""
    dtype = tonic.datasets.CIFAR10DVS.dtype
    return [(_events((128, 128, 2), 300, i, dtype), i % 10) for i in range(1000)]


def test_cifar10_dvs_split_is_9_to_1_stratified_and_fixed(cifar10_dvs_source):
    source = Recordings(cifar10_dvs_source)
    dataset = jsnn.data.get("cifar10_dvs", source=source, steps=5)
    assert source.reads == 0  # labels came from `targets`, no events were read
    assert (dataset.num_train, dataset.num_test) == (900, 100)
    assert dataset.input_shape == (5, 48, 48, 2) and dataset.num_classes == 10
    train, test = dataset.train_source.indices, dataset.test_source.indices
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(1000))
    labels = np.asarray(source.targets)
    assert np.bincount(labels[test]).tolist() == [10] * 10
    assert np.bincount(labels[train]).tolist() == [90] * 10
    again = jsnn.data.get("cifar10_dvs", source=cifar10_dvs_source, steps=5)  # labels read
    np.testing.assert_array_equal(again.test_source.indices, test)
    assert not np.array_equal(test % 100 // 10, np.repeat(np.arange(10), 10))  # not a fixed block


def test_cifar10_dvs_frames_are_resized_counts_with_flip_and_roll(cifar10_dvs_source):
    dataset = jsnn.data.get("cifar10_dvs", source=cifar10_dvs_source, steps=5)
    example = dataset.test_transform(cifar10_dvs_source[0])
    assert example["image"].shape == (5, 48, 48, 2) and example["image"].dtype == np.float32
    total = example["image"].sum() * (128 / 48) ** 2  # area averaging keeps the mean
    assert 298 <= total <= 300 + 1e-3
    frames = EventFrames((128, 128, 2), 5, (48, 48), max_roll=5)
    shifts_seen, flips_seen = set(), set()
    for seed in range(40):
        out = frames.train(cifar10_dvs_source[0], np.random.default_rng(seed))["image"]
        rng = np.random.default_rng(seed)
        flip, (dy, dx) = rng.random() < 0.5, rng.integers(-5, 6, size=2)
        expected = example["image"][:, :, ::-1] if flip else example["image"]
        np.testing.assert_array_equal(out, np.roll(expected, (dy, dx), axis=(1, 2)))
        shifts_seen.update((int(dy), int(dx)))
        flips_seen.add(bool(flip))
    assert flips_seen == {False, True} and min(shifts_seen) == -5 and max(shifts_seen) == 5
    batch = dataset.train(batch_size=8, seed=1)[0]
    assert batch["image"].shape == (8, 5, 48, 48, 2) and batch["label"].dtype == np.int32
    assert_shards_match(dataset, batch_size=8, seed=1, steps=(0, 112, 113))
    test = dataset.test(batch_size=32)
    assert len(test) == 4 and test[3]["mask"].sum() == 100 - 96


def test_frames_are_tonic_to_frame_counts_in_time_height_width_polarity_order():
    events = np.zeros(4, tonic.datasets.NMNIST.dtype)
    events["x"], events["y"], events["p"] = 3, 5, 1
    events["t"] = [0, 10, 20, 1000]
    frames = events_to_frames(events, (34, 34, 2), steps=2)
    assert frames.shape == (2, 34, 34, 2) and frames.dtype == np.float32
    assert frames[0, 5, 3, 1] == 3  # x is the width axis, y the height axis
    assert frames.sum() - frames[:, 5, 3, 1].sum() == 0
    reference = tonic.transforms.ToFrame((34, 34, 2), n_time_bins=2)(events)
    np.testing.assert_array_equal(frames, reference.transpose(0, 2, 3, 1))
    shuffled = events[[2, 0, 3, 1]]  # unsorted streams are sorted first
    np.testing.assert_array_equal(events_to_frames(shuffled, (34, 34, 2), 2), frames)
    empty = events_to_frames(events[:0], (34, 34, 2), steps=3)
    assert empty.shape == (3, 34, 34, 2) and not empty.any()
    constant = np.full((2, 128, 128, 2), 3.0, np.float32)
    np.testing.assert_allclose(resize_frames(constant, (48, 48)), 3.0, rtol=1e-5)


def test_resize_averages_each_output_pixels_input_area():
    def overlap(size_in, size_out):  # [out, in]: share of input pixel j in output pixel i
        edges = np.arange(size_out + 1) * size_in / size_out
        j = np.arange(size_in)
        lengths = np.minimum(edges[1:, None], j + 1) - np.maximum(edges[:-1, None], j)
        return np.clip(lengths, 0, None) * size_out / size_in

    frames = np.random.default_rng(0).random((3, 128, 20, 2)).astype(np.float32)
    expected = np.einsum("oh,thwp,qw->toqp", overlap(128, 48), frames, overlap(20, 30))
    np.testing.assert_allclose(resize_frames(frames, (48, 30)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "sensor", "classes"), [("nmnist", (34, 34, 2), 10), ("dvs_gesture", (128, 128, 2), 11)]
)
def test_split_event_sets_bin_all_events(name, sensor, classes):
    train = [(_events(sensor, 500, i), i % classes) for i in range(24)]
    test = [(_events(sensor, 500, 100 + i), i % classes) for i in range(7)]
    dataset = jsnn.data.get(name, train_source=train, test_source=test, steps=4)
    width, height, polarities = sensor
    assert dataset.input_shape == (4, height, width, polarities)
    assert (dataset.num_classes, dataset.num_train, dataset.num_test) == (classes, 24, 7)
    batch = dataset.train(batch_size=6, seed=0)[0]
    assert batch["image"].shape == (6, 4, height, width, polarities)
    totals = batch["image"].sum(axis=(1, 2, 3, 4))
    assert np.all((totals >= 498) & (totals <= 500))  # tonic may drop an event at a bin edge
    again = jsnn.data.get(name, train_source=train, test_source=test, steps=4)
    np.testing.assert_array_equal(
        again.train(batch_size=6, seed=0)[3]["image"],
        dataset.train(batch_size=6, seed=0)[3]["image"],
    )
    first = dataset.test(batch_size=4)[0]
    np.testing.assert_array_equal(first["label"], [0, 1, 2, 3])
    np.testing.assert_array_equal(first["image"][0], events_to_frames(test[0][0], sensor, steps=4))


def test_missing_tonic_data_says_how_to_get_it(tmp_path, no_network, monkeypatch):
    with pytest.raises(jsnn.data.DatasetNotPreparedError) as info:
        jsnn.data.get("nmnist", data_dir=str(tmp_path))
    message = str(info.value)
    assert "download=True" in message and str(tmp_path / "NMNIST") in message
    monkeypatch.setitem(sys.modules, "aedat", None)  # as if aedat were not installed
    with pytest.raises(ImportError, match=r"needs the aedat package.*pip install aedat"):
        jsnn.data.get("cifar10_dvs", data_dir=str(tmp_path))


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("nmnist", {"steps": 0}, "steps must be a positive integer, got 0"),
        ("nmnist", {"augment": True}, "no training augmentation is defined for nmnist"),
        ("nmnist", {"source": []}, "nmnist comes split: pass train_source= and test_source="),
        ("nmnist", {"train_source": []}, "pass both train_source= and test_source=, or neither"),
        ("cifar10_dvs", {"train_source": [], "test_source": []}, "pass source=, not"),
        ("cifar10_dvs", {"size": (48,)}, "size must be (height, width), got (48,)"),
        ("digits_events", {"steps": -2}, "steps must be a positive integer, got -2"),
        ("digits_events", {"cutout": True}, "unknown option(s) ['cutout'] for 'digits_events'"),
    ],
)
def test_bad_event_options_are_named(name, options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        jsnn.data.get(name, **options)


def test_event_camera_fires_only_where_log_intensity_crosses_the_threshold():
    video = np.full((2, 2, 3), 0.5)
    video[1] = [[0.5, 0.55, 1.5], [0.1, 0.5, 0.9]]  # steady, small rise, big rise; fall, ...
    events = simulate_event_camera(video, np.array([0.0, 1000.0]), threshold=0.2, offset=0.1)
    log_change = np.log(video[1] + 0.1) - np.log(video[0] + 0.1)
    expected = np.floor(np.abs(log_change) / 0.2).astype(int)
    counts = np.zeros((2, 3), int)
    np.add.at(counts, (events["y"], events["x"]), 1)
    np.testing.assert_array_equal(counts, expected)  # e.g. 0.5 -> 0.55 is below threshold
    assert expected[0, 1] == 0 and expected[0, 2] > 1 and expected[1, 0] > 1
    polarity = np.sign(log_change[events["y"], events["x"]]) > 0
    np.testing.assert_array_equal(events["p"], polarity)  # ON for brighter, OFF for darker
    assert np.all(np.diff(events["t"]) >= 0) and np.all((events["t"] > 0) & (events["t"] <= 1000))
    # Crossing times: the first ON event at (0, 2) comes when log intensity rose by 0.2.
    first = events["t"][(events["y"] == 0) & (events["x"] == 2)][0]
    assert first == round(1000 * 0.2 / log_change[0, 2])
    # Each event moves the pixel's reference level by the threshold: log levels 0, 0.3, 0.45
    # fire once (0.2) and once more (0.4); a reference reset to each frame would miss the second.
    pixel = (np.exp(np.array([0.0, 0.3, 0.45])) - 0.1).reshape(3, 1, 1)
    steps = simulate_event_camera(pixel, np.array([0.0, 1000.0, 2000.0]))
    np.testing.assert_array_equal(steps["t"], [667, 1667])
    np.testing.assert_array_equal(steps["p"], [1, 1])


def test_saccades_record_events_over_three_saccades_deterministically():
    camera = SaccadeCamera()
    assert camera.sensor_size((8, 8)) == (12, 12, 2)
    assert not len(camera.record(np.zeros((8, 8))))  # nothing moves, nothing fires
    dot = np.zeros((8, 8))
    dot[4, 4] = 1.0
    events = camera.record(dot)
    assert len(events) > 0
    # Only pixels the dot passes over or next to: image (4, 4) + pad 2 = (6, 6), moved <= 1.5.
    assert np.all(np.abs(events["x"].astype(int) - 6) <= 3)
    assert np.all(np.abs(events["y"].astype(int) - 6) <= 3)
    for saccade in range(3):  # each 100 ms saccade produces ON and OFF events
        during = events[
            (events["t"] >= saccade * 100_000) & (events["t"] < (saccade + 1) * 100_000)
        ]
        assert set(during["p"].tolist()) == {0, 1}
    assert events["t"].max() <= 300_000
    digit = jsnn.data.load_digits()["train_images"][0]
    recording = camera.record(digit)
    np.testing.assert_array_equal(recording, camera.record(digit))
    with pytest.raises(ValueError, match="amplitude must lie in"):
        SaccadeCamera(pad=1, amplitude=1.5)


def test_digits_events_set_delivers_nonzero_deterministic_frames():
    dataset = jsnn.data.get("digits_events", steps=6)
    assert dataset.input_shape == (6, 12, 12, 2)
    assert (dataset.num_train, dataset.num_test) == (1437, 360)
    np.testing.assert_array_equal(
        dataset.test_source.labels, jsnn.data.load_digits()["test_labels"]
    )
    batch = dataset.train(batch_size=16, seed=0)[0]
    assert batch["image"].shape == (16, 6, 12, 12, 2) and batch["image"].dtype == np.float32
    assert np.all(batch["image"].sum(axis=(2, 3, 4)) > 0)  # events in every frame
    np.testing.assert_array_equal(
        batch["image"], jsnn.data.get("digits_events").train(batch_size=16, seed=0)[0]["image"]
    )
    assert_shards_match(dataset, batch_size=8, seed=0, steps=(0, 179))
    last = dataset.test(batch_size=64)[5]
    assert last["image"].shape == (64, 6, 12, 12, 2) and last["mask"].sum() == 360 - 320
