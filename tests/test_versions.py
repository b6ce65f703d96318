"""tfseg.serving.versions: the version folders TF Serving reads, written by export, read by predict."""
import os

import pytest
import tensorflow as tf

from tfseg.serving import versions


def _saved_model(path):
    module = tf.Module()
    module.f = tf.function(lambda x: x + 1, input_signature=[tf.TensorSpec([], tf.float32)])
    tf.saved_model.save(module, path)
    return path


def test_version_numbers_are_the_integer_folders_in_numeric_order(tmp_path):
    for name in ("2", "10", ".tmp-3-abc", "latest"):
        (tmp_path / name).mkdir()
    assert versions.version_numbers(str(tmp_path)) == [2, 10]
    assert versions.next_version(str(tmp_path)) == 11
    assert versions.version_numbers(str(tmp_path / "missing")) == []
    assert versions.next_version(str(tmp_path / "missing")) == 1


def test_the_latest_saved_model_is_the_largest_version_holding_one(tmp_path):
    _saved_model(str(tmp_path / "1"))
    _saved_model(str(tmp_path / "3"))
    (tmp_path / "7").mkdir()  # a number without a SavedModel: TF Serving skips it too
    assert versions.latest_saved_model(str(tmp_path)) == os.path.join(str(tmp_path), "3")
    assert versions.latest_saved_model(str(tmp_path / "1")) == str(tmp_path / "1")


def test_a_folder_without_a_saved_model_is_named_in_the_error(tmp_path):
    (tmp_path / "1").mkdir()
    with pytest.raises(FileNotFoundError, match=f"'{tmp_path}' holds no SavedModel.*tfseg.export"):
        versions.latest_saved_model(str(tmp_path))
