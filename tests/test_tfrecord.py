"""TFRecord shards: tools/prepare_data.py writes them, tfseg.data.tfrecord_source reads them back."""
import glob
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from tfseg.data import DataError, SplitUnavailableError, folder, procedural, tfrecord
from tfseg.data import pipeline

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lsun_fixture  # noqa: E402  pylint: disable=wrong-import-position
from test_training import REPO, run_module  # noqa: E402  pylint: disable=wrong-import-position

BINDING = "tfseg.data.tfrecord_source.file_pattern"


def _photo_folder(tmp_path, n=12, resolution=24, unlabelled=(1, 4, 7)):
    """`n` procedural PNG photos with binary masks, minus the masks of `unlabelled`; (images, masks)."""
    root = str(tmp_path / "photos")
    names = procedural.write_png_folder(root, "train", n, resolution)
    for i in unlabelled:
        os.remove(os.path.join(root, "masks", names[i] + ".png"))
    return os.path.join(root, "images"), os.path.join(root, "masks")


def _pattern(out):
    return os.path.join(str(out), "{split}-*.tfrecord")


def _read(split, out, **kwargs):
    return list(tfrecord.tfrecord_source(split, 24, file_pattern=_pattern(out), **kwargs).as_numpy_iterator())


def _digest(image):
    return hashlib.sha1(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()


def _rgb(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_png_shards_of_a_folder_give_back_its_pixels_masks_and_splits(tmp_path):
    images, masks = _photo_folder(tmp_path)
    out = tmp_path / "shards"
    info = tfrecord.prepare_folder(str(out), 24, images, masks, fmt="png", num_shards=3)
    expected = folder.assign_splits(images, masks)

    for split in ("validation", "test"):
        got = _read(split, out)
        # Evaluation splits come back in the folder source's (sorted path) order.
        assert len(got) == len(expected[split]) > 0
        for example, (path, mask_path) in zip(got, expected[split]):
            np.testing.assert_array_equal(example["image"], _rgb(path))
            np.testing.assert_array_equal(example["mask"][..., 0], np.asarray(Image.open(mask_path)) > 127)
    train = tfrecord.tfrecord_source("train", 24, file_pattern=_pattern(out))
    # Three photos have no mask, so train carries none (as image_folder_source).
    assert "mask" not in train.element_spec
    assert sorted(_digest(ex["image"]) for ex in train.as_numpy_iterator()) == \
        sorted(_digest(_rgb(path)) for path, _ in expected["train"])
    assert {split: s["examples"] for split, s in info["splits"].items()} == \
        {split: len(pairs) for split, pairs in expected.items()}
    assert info["splits"]["train"]["masks"] is False and info["splits"]["test"]["masks"] is True
    assert sorted(os.listdir(out)) == ["dataset.json"] + [
        tfrecord.shard_name(split, i, 3) for split in ("test", "train", "validation") for i in range(3)]
    with open(out / "dataset.json") as f:
        assert json.load(f) == info
    description = pipeline.description_of(train, tfrecord.tfrecord_source)
    assert description.images == 12 and "shards" in description.origin


def test_jpeg_shards_keep_the_aspect_with_the_shorter_side_at_the_resolution(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    originals = {}
    for i, (h, w) in enumerate([(48, 64), (64, 40), (30, 30)]):
        photo = lsun_fixture.photo(i, (h, w))
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4:h // 2, w // 3:] = 255
        Image.fromarray(photo).save(images / f"p{i}.png")
        Image.fromarray(mask).save(masks / f"p{i}.png")
        originals[f"p{i}"] = photo, mask
    # All labelled photos in test, so the test split is in file order: p0, p1, p2.
    tfrecord.prepare_folder(str(tmp_path / "out"), 24, str(images), str(masks), validation_fraction=0.0,
                            test_fraction=1.0, fmt="jpeg", num_shards=2)
    got = _read("test", tmp_path / "out")
    assert [ex["image"].shape for ex in got] == [(24, 32, 3), (38, 24, 3), (24, 24, 3)]
    for example, (photo, mask) in zip(got, originals.values()):
        size = example["image"].shape[:2]
        reference = tf.image.resize(photo, size, method="area", antialias=True).numpy()
        # JPEG at quality 95 of an area-resampled photo: within a few grey levels.
        assert np.abs(example["image"].astype(float) - reference).mean() < 3.0
        nearest = tf.image.resize(mask[..., None], size, method="nearest").numpy() > 127
        assert example["mask"].dtype == np.uint8 and set(np.unique(example["mask"])) <= {0, 1}
        assert (example["mask"].astype(bool) == nearest).mean() > 0.9


def test_lsun_lmdb_shards_skip_and_count_the_corrupt_value(tmp_path):
    keys, kinds = lsun_fixture.write_lsun_lmdb(str(tmp_path / "horse"), num_images=6, num_corrupt=1)
    out = tmp_path / "horse_tfr"
    info = tfrecord.prepare_lsun(str(out), 32, str(tmp_path / "horse"), num_shards=4)
    corrupt = next(key.decode() for key in keys if kinds[key] == "corrupt")
    assert info["splits"] == {"train": {"examples": 6, "shards": 4, "masks": False}}
    assert info["skipped"] == 1 and info["skipped_inputs"][0]["name"].endswith(corrupt)
    assert info["source"]["kind"] == "lsun_lmdb"
    got = _read("train", out)
    assert len(got) == 6 and all(ex["image"].shape == (32, 43, 3) for ex in got)  # 96 x 128 photos
    with pytest.raises(SplitUnavailableError):
        tfrecord.tfrecord_source("validation", 32, file_pattern=_pattern(out))

    limited = tfrecord.prepare_lsun(str(tmp_path / "first3"), 32, str(tmp_path / "horse"), limit=3)
    assert limited["splits"]["train"]["examples"] + limited["skipped"] == 3


def test_worker_shard_gives_files_to_workers_and_falls_back_to_records():
    files = [f"f{i}" for i in range(5)]
    assert tfrecord.worker_shard(files, 1, 0) == (files, 1, 0)
    assert tfrecord.worker_shard(files, 2, 0) == (["f0", "f2", "f4"], 1, 0)
    assert tfrecord.worker_shard(files, 2, 1) == (["f1", "f3"], 1, 0)
    assert tfrecord.worker_shard(files, 5, 4) == (["f4"], 1, 0)
    # Fewer files than workers: every worker reads every file and keeps its share of the records.
    assert tfrecord.worker_shard(files, 6, 3) == (files, 6, 3)


@pytest.mark.parametrize("num_shards", [4, 1], ids=["by_files", "by_records"])
def test_every_train_record_is_read_by_exactly_one_of_two_workers(tmp_path, num_shards):
    images, masks = _photo_folder(tmp_path, n=10)
    tfrecord.prepare_folder(str(tmp_path / "out"), 24, images, masks, fmt="png", num_shards=num_shards)
    shares = [[_digest(ex["image"]) for ex in _read("train", tmp_path / "out", num_workers=2, worker_index=i)]
              for i in range(2)]
    everything = [_digest(ex["image"]) for ex in _read("train", tmp_path / "out")]
    assert len(everything) == 10 and sorted(shares[0] + shares[1]) == sorted(everything)
    assert not set(shares[0]) & set(shares[1]) and all(shares)
    # Evaluation splits are read whole by every worker.
    assert len(_read("test", tmp_path / "out", num_workers=2, worker_index=1)) == \
        len(folder.assign_splits(images, masks)["test"])
    ds = tfrecord.tfrecord_source("train", 24, file_pattern=_pattern(tmp_path / "out"))
    batched = pipeline.make_dataset("train", 2, source=lambda split, r: ds, resolution=16)
    # experimental_distribute_dataset must not shard a second time.
    assert batched.options().experimental_distribute.auto_shard_policy == \
        tf.data.experimental.AutoShardPolicy.OFF


@pytest.mark.parametrize("task, expected", [(("chief", 0), (3, 0)), (("worker", 1), (3, 2)),
                                            (("evaluator", 0), (1, 0))])
def test_tf_config_counts_the_chief_as_worker_zero(monkeypatch, task, expected):
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"chief": ["c:1"], "worker": ["w:1", "w:2"], "evaluator": ["e:1"]},
        "task": {"type": task[0], "index": task[1]}}))
    assert tfrecord.cluster_workers() == expected


def test_source_errors_name_the_binding_and_the_tool(tmp_path):
    with pytest.raises(DataError, match=f"{BINDING}.*prepare_data.py"):
        tfrecord.tfrecord_source("train", 24)
    with pytest.raises(DataError, match=f"{BINDING}.*matches no file.*prepare_data.py") as err:
        tfrecord.tfrecord_source("train", 24, file_pattern=_pattern(tmp_path / "nowhere"))
    assert not isinstance(err.value, SplitUnavailableError)
    (tmp_path / "train-0.tfrecord").write_text("not a record")
    with pytest.raises(DataError, match="not readable TFRecords"):
        tfrecord.tfrecord_source("train", 24, file_pattern=_pattern(tmp_path))

    images, _ = _photo_folder(tmp_path / "unlabelled")
    out = tmp_path / "out"
    tfrecord.prepare_folder(str(out), 24, images)
    with pytest.raises(SplitUnavailableError, match="validation"):
        tfrecord.tfrecord_source("validation", 24, file_pattern=_pattern(out))
    with pytest.raises(SplitUnavailableError, match="no {split}"):
        tfrecord.tfrecord_source("test", 24, file_pattern=str(out / "train-*.tfrecord"))
    with pytest.raises(DataError, match="worker_index"):
        tfrecord.tfrecord_source("train", 24, file_pattern=_pattern(out), num_workers=2, worker_index=2)


def test_prepare_refuses_a_non_empty_out_and_overwrite_removes_stale_shards(tmp_path):
    images, masks = _photo_folder(tmp_path)
    out = str(tmp_path / "out")
    tfrecord.prepare_folder(out, 24, images, masks, num_shards=4)
    with pytest.raises(DataError, match="--overwrite"):
        tfrecord.prepare_folder(out, 24, images, masks, num_shards=2)
    (tmp_path / "out" / "notes.txt").write_text("mine")
    tfrecord.prepare_folder(out, 24, images, num_shards=2, overwrite=True)
    assert sorted(os.listdir(out)) == ["dataset.json", "notes.txt", "train-00000-of-00002.tfrecord",
                                       "train-00001-of-00002.tfrecord"]
    with pytest.raises(DataError, match="--resolution"):
        tfrecord.prepare_folder(str(tmp_path / "other"), 0, images)
    assert not os.path.exists(tmp_path / "other")


@pytest.mark.slow
def test_prepare_data_cli_writes_shards_and_explains_its_errors(tmp_path):
    images, masks = _photo_folder(tmp_path)
    tool = os.path.join(REPO, "tools", "prepare_data.py")

    def run(*args):
        return subprocess.run([sys.executable, tool, *args], cwd=REPO, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})

    shown = run("--help")
    assert "--lsun_lmdb" in shown.stdout and "tfrecord_source" in shown.stdout  # absl's --help exits 1
    missing = run(f"--image_dir={tmp_path / 'nope'}", f"--out={tmp_path / 'out'}", "--resolution=24")
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
    assert "--image_dir" in missing.stderr and "not a folder" in missing.stderr

    (tmp_path / "photos" / "images" / "broken.png").write_bytes(b"not a png")
    args = [f"--image_dir={images}", f"--mask_dir={masks}", f"--out={tmp_path / 'out'}", "--resolution=24",
            "--shards=2", "--format=png"]
    done = run(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wrote 12 train" in done.stdout and "skipped 1 unreadable" in done.stdout
    assert "broken.png" in done.stdout
    with open(tmp_path / "out" / "dataset.json") as f:
        info = json.load(f)
    assert info["skipped"] == 1 and "prepare_data.py" in info["command"] and info["format"] == "png"
    assert info["splits"]["train"]["examples"] == 12

    again = run(*args)
    assert again.returncode == 2 and "--overwrite" in again.stderr


@pytest.mark.slow
def test_training_on_shards_scores_validation_and_test_and_evaluate_reads_them(tmp_path):
    images, masks = _photo_folder(tmp_path, n=24, resolution=16, unlabelled=())
    tfrecord.prepare_folder(str(tmp_path / "shards"), 16, images, masks, num_shards=2)
    model_dir = str(tmp_path / "run")
    result = run_module("tfseg.train", f"--gin_file={REPO}/gin_configs/redo_folder.gin", "--smoke",
                        f"--model_dir={model_dir}",
                        "--gin_bindings=tfseg.data.make_dataset.source=@tfseg.data.tfrecord_source",
                        f"--gin_bindings={BINDING}='{_pattern(tmp_path / 'shards')}'")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "TFRecord shards" in result.stdout and "validation fg IoU" in result.stdout
    with open(os.path.join(model_dir, "eval_test.json")) as f:
        assert json.load(f)["num_images"] > 0
    assert glob.glob(os.path.join(model_dir, "eval_test.png"))

    scored = run_module("tfseg.evaluate", f"--model_dir={model_dir}", "--split=test")
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert "fixed polarity" in scored.stdout and "fg IoU" in scored.stdout
