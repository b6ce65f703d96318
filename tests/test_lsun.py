"""LSUN read natively from LMDBs laid out like the official archives (written by lsun_fixture)."""
import functools
import hashlib
import os
import re
import sys

import numpy as np
import pytest

from tfseg import config, data, registry
from tfseg.data import decode, lsun
from tfseg.training import checkpointing, loading, schedule, train_config

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lsun_fixture  # noqa: E402  pylint: disable=wrong-import-position
from test_training import REPO, run_module, run_train  # noqa: E402  pylint: disable=wrong-import-position

registry.import_configurables()  # these tests parse configs, as the entry points do

HORSE_URL = "http://dl.yf.io/lsun/objects/horse.zip"
BINDING = "tfseg.data.lsun_source.lmdb_dir"
# WebP and JPEG at quality 95 decode to within ~0.5 grey levels on average; two different test
# photos differ by 7 or more.
MAX_MEAN_ABS_DIFF = 3.0


@pytest.fixture(name="horse")
def horse_fixture(tmp_path):
    """An unzipped 'horse.zip': 6 photos (1 JPEG, 5 WebP) and 1 truncated WebP value."""
    folder = str(tmp_path / "horse")
    keys, kinds = lsun_fixture.write_lsun_lmdb(folder)
    decode.reset_skipped_files()
    yield folder, keys, kinds
    decode.reset_skipped_files()


def _photo_index(key):
    """The fixture's photo number of an LMDB key (its ids are sha1('lsun-test-<i>'))."""
    return next(i for i in range(100) if hashlib.sha1(f"lsun-test-{i}".encode()).hexdigest().encode() == key)


def _matched_photos(images):
    """The fixture photo number of every image, checking each is close to that photo."""
    found = []
    for image in images:
        diffs = [np.abs(image.astype(np.int32) - lsun_fixture.photo(i)).mean() for i in range(10)]
        assert min(diffs) < MAX_MEAN_ABS_DIFF, diffs
        found.append(int(np.argmin(diffs)))
    return found


def _images(ds):
    return [example["image"].numpy() for example in ds]


def test_lsun_source_yields_every_decodable_photo_and_records_the_corrupt_value(horse):
    folder, keys, kinds = horse
    ds = data.lsun_source("train", 64, lmdb_dir=folder)
    assert ds.element_spec["image"].dtype.name == "uint8" and "mask" not in ds.element_spec
    images = _images(ds)
    assert all(image.shape == (96, 128, 3) and image.dtype == np.uint8 for image in images)
    readable = [key for key in keys if kinds[key] != "corrupt"]
    assert {kinds[key] for key in readable} == {"webp", "jpeg"}
    assert sorted(_matched_photos(images)) == sorted(_photo_index(key) for key in readable)

    (corrupt,) = [key for key in keys if kinds[key] == "corrupt"]
    assert decode.skipped_count() == 1
    (name,) = decode.skipped_files()
    assert name == f"{folder}:{corrupt.decode()}"


@pytest.mark.parametrize("limit", [1, 3, 7])
def test_limit_takes_the_first_keys_in_cursor_order(horse, limit):
    folder, keys, kinds = horse
    first = keys[:limit]
    assert lsun.keys(folder, limit) == first
    assert [key for key, _ in lsun.iterate_lmdb(folder, limit)] == first
    images = _images(data.lsun_source("train", 64, lmdb_dir=folder, limit=limit))
    expected = sorted(_photo_index(key) for key in first if kinds[key] != "corrupt")
    assert sorted(_matched_photos(images)) == expected
    assert decode.skipped_count() == sum(kinds[key] == "corrupt" for key in first)


@pytest.mark.parametrize("split", ["validation", "test"])
def test_lsun_has_no_evaluation_split(horse, split):
    with pytest.raises(data.SplitUnavailableError, match="no masks"):
        data.lsun_source(split, 64, lmdb_dir=horse[0])


def test_missing_folder_says_how_to_download_and_bind(tmp_path):
    missing = str(tmp_path / "horse")
    with pytest.raises(data.DataError) as err:
        data.lsun_source("train", 64, lmdb_dir=missing, category="horse")
    message = str(err.value)
    assert missing in message and "does not exist" in message
    assert HORSE_URL in message and "unzip horse.zip" in message and BINDING in message


def test_folder_without_data_mdb_is_not_an_unzipped_archive(tmp_path):
    empty = tmp_path / "downloads"
    empty.mkdir()
    with pytest.raises(data.DataError) as err:
        data.lsun_source("train", 64, lmdb_dir=str(empty), category="horse")
    message = str(err.value)
    assert "data.mdb" in message and HORSE_URL in message and BINDING in message


def test_data_mdb_itself_is_refused_with_the_folder_to_bind(horse):
    with pytest.raises(data.DataError) as err:
        data.lsun_source("train", 64, lmdb_dir=os.path.join(horse[0], "data.mdb"), category="horse")
    assert "is a file" in str(err.value) and BINDING in str(err.value)


def test_lmdb_one_folder_down_names_the_sub_folder_to_bind(tmp_path):
    lsun_fixture.write_lsun_lmdb(str(tmp_path / "unzipped" / "horse"))
    with pytest.raises(data.DataError) as err:
        data.lsun_source("train", 64, lmdb_dir=str(tmp_path / "unzipped"), category="horse")
    assert f"{BINDING}='{tmp_path / 'unzipped' / 'horse'}'" in str(err.value)


def test_unbound_lmdb_dir_names_the_binding_and_the_download():
    config.parse([os.path.join(REPO, "gin_configs", "lsun_horse.gin")])
    with pytest.raises(data.DataError) as err:
        data.validate_data_config()
    message = str(err.value)
    assert BINDING in message and HORSE_URL in message and "unzip" in message
    assert "tensorflow-io" not in message and "tfds" not in message


def test_limit_zero_is_refused(horse):
    with pytest.raises(data.DataError, match="tfseg.data.lsun_source.limit"):
        data.lsun_source("train", 64, lmdb_dir=horse[0], limit=0)


def test_tfds_source_sends_lsun_to_lsun_source():
    with pytest.raises(data.DataError) as err:
        data.tfds_source("train", 64, name="lsun/horse")
    message = str(err.value)
    assert "@tfseg.data.lsun_source" in message and HORSE_URL in message and BINDING in message


def test_make_dataset_gives_normalised_batches_from_lsun(horse):
    source = functools.partial(data.lsun_source, lmdb_dir=horse[0])
    batch = next(iter(data.make_dataset("train", 4, source=source, resolution=32)))
    image = batch["image"].numpy()
    assert image.shape == (4, 32, 32, 3) and image.dtype == np.float32
    assert -1.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.05
    assert "mask" not in batch


def _smoke_schedule(gin_file, bindings):
    """`[(stage name, first step, end step)]` of `gin_file` in smoke mode."""
    config.parse([os.path.join(REPO, gin_file), config.SMOKE_CONFIG], bindings)
    cfg = train_config.TrainConfig()
    return [(stage.name, start, end)
            for stage, start, end in schedule.stage_schedule(loading.build_method(cfg), cfg)]


LSUN_BINDINGS = ["tfseg.data.make_dataset.source=@tfseg.data.lsun_source", "tfseg.data.lsun_source.lmdb_dir='{}'"]


@pytest.mark.slow
def test_smoke_run_on_an_lsun_lmdb_reports_images_found_and_skipped(horse, tmp_path):
    gin_file, folder = "gin_configs/lsun_horse.gin", horse[0]
    model_dir = str(tmp_path / "runs" / "lsun_smoke")
    bindings = [binding.format(folder) for binding in LSUN_BINDINGS]
    result = run_module("tfseg.train", f"--gin_file={gin_file}", "--smoke", f"--model_dir={model_dir}",
                        *[f"--gin_bindings={binding}" for binding in bindings])
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    schedule = _smoke_schedule(gin_file, bindings)
    # Progressive growing at the smoke size: 8 and 16 px, one step each; then two encoder and two segmenter steps.
    assert [(name, end - start) for name, start, end in schedule] == [
        ("generator_8", 1), ("generator_16", 1), ("encoder", 2), ("segmenter", 2)]
    total = schedule[-1][2]
    assert f"step {total}/{total}" in out
    assert checkpointing.latest_checkpoint(model_dir, "latest").endswith(f"ckpt-{total}")
    assert re.search(rf"^data: LSUN LMDB '{re.escape(folder)}' \(first 100,000\)$", out, re.M), out
    assert re.search(r"^  train       7 images, no masks$", out, re.M), out
    assert re.search(r"^skipped as unreadable: 1 file", out, re.M), out
    assert "no labelled test split" in out


def test_the_labels4free_lsun_config_finds_the_lmdb_photos_in_a_dry_run(horse, tmp_path, capsys):
    # The LMDB is read by the same source as above; the dry run checks this config reaches it.
    folder, model_dir = horse[0], str(tmp_path / "run")
    assert run_train(f"--gin_file={REPO}/gin_configs/labels4free_lsun_horse.gin", "--smoke", "--dry_run",
                     f"--model_dir={model_dir}",
                     *[f"--gin_bindings={binding.format(folder)}" for binding in LSUN_BINDINGS]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^# data: LSUN LMDB '{re.escape(folder)}' \(first 100,000\)$", out, re.M), out
    assert re.search(r"^#   train       7 images, no masks$", out, re.M), out
    # (Whether the dry run's look at the data reaches the corrupt entry varies; the training test above
    # counts it.)
    assert re.findall(r"^#   (\S+): steps (\d+-\d+)", out, re.M) == [("stylegan2", "1-2"), ("alpha", "3-4"),
                                                                    ("segmenter", "5-6")]
    assert not os.path.exists(model_dir)


def test_lsun_horse_without_data_stops_with_download_unzip_and_binding(tmp_path, capsys):
    code = run_train(f"--gin_file={REPO}/gin_configs/lsun_horse.gin", f"--model_dir={tmp_path}/run")
    assert code == 2
    err = capsys.readouterr().err
    assert HORSE_URL in err and "unzip" in err and BINDING in err
    assert "tensorflow-io" not in err and "tfds" not in err
    assert not os.path.exists(f"{tmp_path}/run")
