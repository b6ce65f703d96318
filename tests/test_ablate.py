"""tools/ablate.py: each row trains with its own change, and the table reports every row."""
import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("ablate", os.path.join(REPO, "tools", "ablate.py"))
ablate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablate)


def test_rows_change_exactly_their_ingredient_and_share_the_budget():
    rows = {row: ablate.row_bindings(row, 100, 20) for row in ablate.ROWS}
    budget = "tfseg.training.TrainConfig.stage_steps = {'generator': 100, 'encoder': 0, 'segmenter': 20}"
    assert all(bindings[0] == budget for bindings in rows.values())
    assert rows["a"] == [budget]
    assert rows["b"][1:] == ["tfseg.methods.perturbgan.shift_fraction = 0.0"]
    assert rows["e"][1:] == ["tfseg.data.make_dataset.random_crop = False"]
    assert rows["h"][1:] == ["tfseg.methods.perturbgan.single_generator = True"]
    assert rows["c"][1:] == ["tfseg.methods.perturbgan.shift_fraction = 0.25"]
    assert rows["d"][1:] == ["tfseg.methods.perturbgan.background_contrast_jitter = 0.3"]
    assert rows["g"][1:] == ["tfseg.methods.perturbgan.min_mask_coverage = 0.05"]
    assert sorted(ablate.ROWS) == ["a", "b", "c", "d", "e", "g", "h"]


def test_table_lists_every_row_and_the_full_mask_baseline():
    result = {"fg_iou": 0.5, "miou": 0.6, "accuracy": 0.7, "minutes": 1.0}
    table = ablate.format_table({"a": result, "b": dict(result, fg_iou=0.1)},
                                baseline={"fg_iou": 0.3, "miou": 0.2, "accuracy": 0.3})
    lines = table.splitlines()
    assert lines[2].startswith("| (a) | default | 0.5000")
    assert lines[3].startswith("| (b) | no shift (beta = 0) | 0.1000")
    assert lines[4].startswith("| ref | full-image mask | 0.3000")


@pytest.mark.slow
def test_a_smoke_ablation_row_trains_without_the_shift(tmp_path, capsys):
    assert ablate.main(["--rows=b", f"--out={tmp_path}", "--smoke"]) == 0  # two steps per stage by itself
    with open(tmp_path / "b" / "config.gin") as f:
        text = f.read()
    assert "perturbgan.shift_fraction = 0.0" in text
    with open(tmp_path / "ablation.json") as f:
        saved = json.load(f)
    assert set(saved["rows"]) == {"b"} and 0.0 <= saved["rows"]["b"]["fg_iou"] <= 1.0
    out = capsys.readouterr().out
    assert "| (b) | no shift" in out
    assert "[b] step 4/4" in out  # live progress, and --smoke means 2 + 2 steps, not 1,800
    assert "real test photos" in out and "the paper scores generated images" in out


@pytest.mark.parametrize("row", sorted(ablate.ROWS))
def test_every_row_resolves_on_the_shipped_demo_config(row):
    import gin  # pylint: disable=import-outside-toplevel
    from tfseg import config, registry  # pylint: disable=import-outside-toplevel
    from tfseg.methods import perturbgan  # pylint: disable=import-outside-toplevel
    registry.import_configurables()
    config.parse([os.path.join(ablate.REPO, "gin_configs", "demo_perturbgan.gin")],
                 ablate.row_bindings(row, 100, 20))
    settings = perturbgan.PerturbGANSettings(resolution=32)
    assert {"c": settings.shift_fraction == 0.25, "d": settings.background_contrast_jitter == 0.3,
            "g": settings.min_mask_coverage == 0.05}.get(row, True)
    assert gin.query_parameter("tfseg.training.TrainConfig.stage_steps")["generator"] == 100


def test_unknown_rows_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        ablate.main(["--rows=a,z", f"--out={tmp_path}"])
