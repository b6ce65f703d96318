"""tools/benchmark.py prints its table (tiny settings; the figures themselves are not asserted)."""
import os
import re
import subprocess
import sys

import gin
import pytest

import tfseg.data.pipeline  # noqa: F401  (registers tfseg.data.make_dataset with gin)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchmark  # noqa: E402  pylint: disable=wrong-import-position
import lsun_fixture  # noqa: E402  pylint: disable=wrong-import-position


def _profile_section(out, heading):
    """The --profile tables printed under "where the time goes: <heading>", up to the next section."""
    return out.split(f"where the time goes: {heading}")[1].split("where the time goes")[0]


@pytest.mark.slow
def test_benchmark_prints_training_inference_and_savedmodel_rates():
    result = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--gin_file=gin_configs/demo.gin",
         "--gin_file=gin_configs/smoke.gin", "--steps=1", "--repeats=1", "--warmup=1",
         "--inference_batch=2", "--profile"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO})
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"^off\s+train\s+[\d.]+\s+[\d.]+\s+[\d.]+$", out, re.M), out
    assert re.search(r"^on\s+train\s+[\d.]+\s+[\d.]+\s+[\d.]+$", out, re.M), out
    assert "XLA on / off, train: training x" in out
    assert re.search(r"^serving_default bytes\s+[\d.]+\s+[\d.]+$", out, re.M), out
    assert re.search(r"^serve_image_tensor\s+[\d.]+\s+[\d.]+$", out, re.M), out
    # --profile: where ReDO's step spends its time, XLA off; D's backward pass is in it.
    section = _profile_section(out, "train, XLA off")
    shares = [float(v) for v in re.findall(r"([\d.]+)%$", section, re.M)]
    assert abs(sum(shares) / 2 - 100.0) < 1.0, section  # two tables, each summing to 100 %
    assert re.search(r"^discriminator \(backward\)\s+[\d.]+\s+[\d.]+%$", section, re.M), section
    assert "where the time goes: train, XLA on: not traced (XLA's fused kernels carry no op" in out


@pytest.mark.slow
def test_paper_shapes_time_every_stage_of_a_workload_in_a_process_of_its_own_with_its_peak_memory():
    # The PerturbGAN workload, shrunk by the smoke config and bindings given after the workload's own.
    result = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--paper_shapes", "--workloads=perturbgan_64",
         "--gin_file=gin_configs/smoke.gin", "--gin_bindings=tfseg.training.TrainConfig.resolution=16",
         "--gin_bindings=tfseg.training.TrainConfig.batch_size=4", "--steps=1", "--xla=false", "--profile"],
        cwd=REPO, capture_output=True, text=True, timeout=600,  # the user's environment: no log level set
        env={**{k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}, "PYTHONPATH": REPO})
    assert result.returncode == 0, result.stderr[-3000:]
    noise = [line for line in (result.stdout + result.stderr).splitlines()
             if line.startswith(("I0000", "W0000", "E0000", "WARNING:")) or "cpu_feature_guard" in line]
    assert not noise, noise[:5]  # TensorFlow's start-up lines, in this process and in the workload's
    assert "median of 1 x 1 steps after 1 untimed" in result.stdout
    for stage in ("generator", "encoder", "segmenter"):
        row = re.search(rf"^perturbgan_64\s+off\s+{stage}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$",
                        result.stdout, re.M)
        assert row, result.stdout
        seconds, rate, _, peak_gib = map(float, row.groups())
        assert seconds > 0 and rate > 0
        assert 0.3 < peak_gib < 20  # TensorFlow alone takes several hundred MB
    # The workload's --profile tables, relayed from its process: each stage's, the critic's backward pass
    # in the generator stage (the gradient penalty's double backward).
    relayed = result.stdout.split("perturbgan_64, XLA off:")[1]
    for stage in ("generator", "encoder", "segmenter"):
        assert f"where the time goes: {stage}, XLA off" in relayed
    generator = _profile_section(relayed, "generator")
    assert re.search(r"^discriminator \(backward\)\s+[\d.]+\s+[\d.]+%$", generator, re.M), generator


def test_paper_workloads_exist_and_a_wrong_name_lists_them():
    assert benchmark.chosen_workloads(None) == list(benchmark.PAPER_WORKLOADS)
    assert benchmark.chosen_workloads(["redo_128"]) == ["redo_128"]
    with pytest.raises(ValueError, match="unknown workload\\(s\\) redo_64; --workloads takes redo_128, "):
        benchmark.chosen_workloads(["redo_128", "redo_64"])
    for files, _, _ in benchmark.PAPER_WORKLOADS.values():
        assert all(os.path.exists(os.path.join(REPO, "gin_configs", f)) for f in files)


def test_paper_table_shows_seconds_per_step_images_per_second_and_peak_memory():
    table = benchmark.format_paper_table({("redo_128", False): ({"train": (17.0, 2.94)}, 100.7, 3 * 2**30, "")})
    assert re.search(r"^redo_128\s+off\s+train\s+17\.000\s+2\.940\s+100\.7\s+3\.00$", table, re.M), table
    # Three decimals: a GPU's 0.045 s step and a CPU's 0.148 img/s are not rounded away.
    table = benchmark.format_paper_table({("redo_128", True): ({"train": (0.045, 0.148)}, 100.7, 3 * 2**30, "")})
    assert re.search(r"^redo_128\s+on\s+train\s+0\.045\s+0\.148\s", table, re.M), table


def test_input_pipeline_rates_of_a_photo_folder_an_lsun_lmdb_and_tfrecord_shards(tmp_path):
    from PIL import Image
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        Image.fromarray(lsun_fixture.photo(i)).save(photos / f"{i}.jpg")
    lsun_fixture.write_lsun_lmdb(str(tmp_path / "horse"))
    from tfseg.data import tfrecord  # pylint: disable=import-outside-toplevel
    tfrecord.prepare_folder(str(tmp_path / "shards"), 16, str(photos), num_shards=2, workers=1)
    pattern = str(tmp_path / "shards" / "{split}-*.tfrecord")
    gin.bind_parameter("tfseg.data.make_dataset.shuffle_buffer", 8)  # warm-up need not decode 1000 photos
    sources = benchmark.input_sources(image_dir=str(photos), lsun_lmdb=str(tmp_path / "horse"),
                                      tfrecord_pattern=pattern)
    rates = benchmark.input_pipeline_rates(sources, batch_size=2, resolution=16, batches=2, repeats=2, warmup=1)
    assert list(rates) == [f"photo folder {photos}", f"LSUN LMDB {tmp_path / 'horse'}", f"TFRecord shards {pattern}"]
    assert all(isinstance(rate, float) and rate > 0 for rate in rates.values()), rates
    table = benchmark.format_input_table(rates, 2, 16, 2, 2, 1)
    for name in rates:
        assert re.search(rf"^{re.escape(name)}\s+[\d.]+$", table, re.M), table


def test_consumption_table_sets_step_time_and_real_images_beside_the_input_rate():
    rows = {False: ({"generator": (0.5, 32, 32), "segmenter": (4.0, 32, 0)}, 10.0, None, {})}
    table = benchmark.format_consumption_table(rows, slowest_input=800.0)
    assert re.search(r"^off\s+generator\s+64\.00\s+0\.50\s+1600\.0x$", table, re.M), table
    assert re.search(r"^off\s+segmenter\s+8\.00\s+0\.00\s+generated$", table, re.M), table
