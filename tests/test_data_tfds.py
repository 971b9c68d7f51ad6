"""tfds image pipelines on tfds.testing.mock_data, the augmentations, and the not-prepared error."""

import re
import socket

import numpy as np
import pytest
import tensorflow_datasets as tfds
from data_checks import assert_shards_match

import jsnn.data
from jsnn.data import augment
from jsnn.data.images import IMAGE_SETS

MOCK = {"num_examples": 20, "policy": tfds.testing.MockPolicy.USE_CODE}


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "fashion_mnist", "imagenet"])
def test_mocked_tfds_pipelines_deliver_scaled_float_images(name, no_network):
    spec = IMAGE_SETS[name]
    with tfds.testing.mock_data(**MOCK):
        dataset = jsnn.data.get(name)
        assert (dataset.num_train, dataset.num_test) == (20, 20)
        assert dataset.input_shape == spec.input_shape
        assert dataset.num_classes == spec.num_classes
        train = dataset.train(batch_size=8, seed=0)
        batch = train[0]
        assert batch["image"].shape == (8, *spec.input_shape)
        assert batch["image"].dtype == np.float32 and batch["label"].dtype == np.int32
        assert np.all((batch["label"] >= 0) & (batch["label"] < spec.num_classes))
        for key in batch:  # step-indexed and deterministic
            np.testing.assert_array_equal(dataset.train(batch_size=8, seed=0)[0][key], batch[key])
        test = dataset.test(batch_size=8)
        assert len(test) == 3 and test[2]["mask"].tolist() == [1] * 4 + [0] * 4
        first = test[0]
        record = dataset.test_source[0]
        assert first["label"][0] == record["label"]
        raw = np.asarray(record["image"], np.float32) / 255
        if spec.mean is None:  # MNIST, Fashion-MNIST: [0, 1], no augmentation
            np.testing.assert_allclose(first["image"][0], raw)
            sources = [dataset.train_source[i] for i in range(dataset.num_train)]
            for image, label in zip(batch["image"], batch["label"], strict=True):
                assert any(
                    r["label"] == label and np.array_equal(np.float32(r["image"]) / 255, image)
                    for r in sources
                )
        elif name != "imagenet":  # CIFAR: per-channel mean/std
            np.testing.assert_allclose(
                first["image"][0], (raw - np.float32(spec.mean)) / np.float32(spec.std), rtol=1e-5
            )
        else:  # ImageNet: centre crop of the image resized to 256, normalised
            expected = augment.center_crop(np.asarray(record["image"]))
            expected = (expected / np.float32(255) - np.float32(spec.mean)) / np.float32(spec.std)
            np.testing.assert_allclose(first["image"][0], expected, rtol=1e-5, atol=1e-6)


def test_cifar_training_augmentation_is_the_same_for_every_process_layout(no_network):
    with tfds.testing.mock_data(**MOCK):
        dataset = jsnn.data.get("cifar10", autoaugment=True, cutout=True)
        assert_shards_match(dataset, batch_size=8, seed=5, steps=(0, 1, 2, 3))
        plain = jsnn.data.get("cifar10", augment=False)
        a, b = dataset.train(batch_size=8, seed=5), plain.train(batch_size=8, seed=5)
        np.testing.assert_array_equal(a[0]["label"], b[0]["label"])  # same order
        assert not np.allclose(a[0]["image"], b[0]["image"])  # augmented pixels


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("mnist", {"augment": True}, "no training augmentation is defined for mnist"),
        ("mnist", {"autoaugment": True}, "CIFAR-10 policy applies to CIFAR, not mnist"),
        ("imagenet", {"cutout": 16}, "Cutout is only set up for CIFAR, not imagenet"),
        ("cifar10", {"cutout": -1}, "cutout must be a bool or a patch length >= 0, got -1"),
        ("cifar10", {"steps": 4}, "unknown option(s) ['steps'] for 'cifar10'"),
    ],
)
def test_bad_image_options_are_named(name, options, message, no_network):
    with tfds.testing.mock_data(**MOCK), pytest.raises(ValueError, match=re.escape(message)):
        jsnn.data.get(name, **options)


@pytest.mark.parametrize("name", ["cifar10", "imagenet"])
def test_unprepared_tfds_set_says_how_to_prepare_it(name, tmp_path, no_network):
    tfds_name = IMAGE_SETS[name].tfds_name
    with pytest.raises(jsnn.data.DatasetNotPreparedError) as info:
        jsnn.data.get(name, data_dir=str(tmp_path))
    message = str(info.value)
    assert f"{tfds_name!r} is not prepared" in message
    assert "no prepared files found" in message
    assert 'pip install -e ".[tfds]" tensorflow' in message
    assert f"tfds build {tfds_name} --data_dir={tmp_path} --file_format=array_record" in message
    assert "without TensorFlow" in message
    assert ("--manual_dir" in message) == (name == "imagenet")
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no tfds trace


def test_random_crop_flip_moves_but_keeps_the_content():
    rng = np.random.default_rng(0)
    image = rng.integers(1, 256, (32, 32, 3), dtype=np.uint8)
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    windows = {(top, left, flip) for top in range(9) for left in range(9) for flip in (False, True)}
    seen = set()
    for seed in range(40):
        out = augment.random_crop_flip(image, np.random.default_rng(seed))
        assert out.shape == image.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(
            out, augment.random_crop_flip(image, np.random.default_rng(seed))
        )
        match = [
            w
            for w in windows
            if np.array_equal(
                out, (padded[:, ::-1] if w[2] else padded)[w[0] : w[0] + 32, w[1] : w[1] + 32]
            )
        ]
        assert len(match) == 1  # a window of the zero-padded (maybe mirrored) image
        seen.add(match[0])
    assert len(seen) > 20 and {w[2] for w in seen} == {False, True}
    flipped = augment.random_crop_flip(image, np.random.default_rng(1), padding=0)
    np.testing.assert_array_equal(np.sort(flipped, None), np.sort(image, None))  # same pixels


def test_cutout_zeroes_a_16_pixel_square_clipped_at_the_borders():
    image = np.ones((32, 32, 3), np.float32)
    sizes = set()
    for seed in range(60):
        out = augment.cutout(image, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        y, x = rng.integers(32), rng.integers(32)
        expected = np.ones((32, 32), bool)
        expected[max(y - 8, 0) : min(y + 8, 32), max(x - 8, 0) : min(x + 8, 32)] = False
        np.testing.assert_array_equal(out[..., 0] != 0, expected)
        np.testing.assert_array_equal(out[..., 0], out[..., 2])  # all channels
        zero_rows = np.flatnonzero((out == 0).any(axis=(1, 2)))
        zero_cols = np.flatnonzero((out == 0).any(axis=(0, 2)))
        assert np.all(out[zero_rows[0] : zero_rows[-1] + 1, zero_cols[0] : zero_cols[-1] + 1] == 0)
        sizes.add((len(zero_rows), len(zero_cols)))
    assert (16, 16) in sizes and any(h < 16 or w < 16 for h, w in sizes)
    assert all(8 <= h <= 16 and 8 <= w <= 16 for h, w in sizes)
    assert np.all(image == 1)  # the input is not modified


def test_autoaugment_policy_is_the_papers_and_outputs_valid_images():
    policy = augment.CIFAR10_POLICY
    assert len(policy) == 25 and all(len(sub) == 2 for sub in policy)
    for sub in policy:
        for name, probability, level in sub:
            assert name in augment._MAGNITUDES and 0 <= probability <= 1 and 0 <= level <= 9
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    outputs = []
    for seed in range(60):
        out = augment.autoaugment(image, np.random.default_rng(seed))
        assert out.shape == image.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out, augment.autoaugment(image, np.random.default_rng(seed)))
        outputs.append(out)
    changed = sum(not np.array_equal(out, image) for out in outputs)
    assert 30 < changed < 60  # most draws change the image, some sub-policies may not fire
    # Every operation at full magnitude and both signs keeps a valid image.
    from PIL import Image

    for name, magnitudes in augment._MAGNITUDES.items():
        for sign in (-1.0, 1.0):
            out = np.asarray(augment._apply(Image.fromarray(image), name, magnitudes[9], sign))
            assert out.shape == image.shape and out.dtype == np.uint8
    img = Image.fromarray(image)
    np.testing.assert_array_equal(augment._apply(img, "invert", 0, 1), 255 - image)
    np.testing.assert_array_equal(augment._apply(img, "solarize", 0.0, 1), 255 - image)
    np.testing.assert_array_equal(augment._apply(img, "posterize", 4, 1), image & 0xF0)
    shifted = np.asarray(augment._apply(img, "translate_x", 0.25, 1.0))  # 8 px to the left
    np.testing.assert_array_equal(shifted[:, :24], image[:, 8:])
    assert np.all(shifted[:, 24:] == 128)  # grey fill
    with pytest.raises(ValueError, match="uint8 RGB image"):
        augment.autoaugment(image.astype(np.float32), rng)


def test_imagenet_crops_have_the_output_size():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    for seed in range(5):
        out = augment.random_resized_crop(image, np.random.default_rng(seed), size=64)
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert augment.center_crop(image).shape == (224, 224, 3)
    small = np.full((20, 10, 3), 7, np.uint8)
    np.testing.assert_array_equal(augment.center_crop(small), np.full((224, 224, 3), 7))
    gray = image[..., :1]
    assert augment.center_crop(gray, size=32, resize=40).shape == (32, 32, 1)
    assert augment.random_resized_crop(gray, rng, size=32).shape == (32, 32, 1)
