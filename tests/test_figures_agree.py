"""A figure quoted in a gin config's comments or in the README agrees with docs/results.md, and each
config header's command dry-runs.

Why: a figure kept in two places drifts (a header said one score while docs/results.md said another).
docs/results.md is the only home of measured figures; the headers quote at most one measured line
from it. The rule, checked here:

* A figure is what test_results_doc calls one (a score-like decimal, a timing, a clock time, a rate
  or a size in memory, a speed ratio), unless it is a setting's value: written after "=" (not ">=" or
  "<="), after a flag (`--th 0.9`) or after one of SETTING_WORDS (`psi 0.3`, `decay 0.999`).
* Every figure in a gin file's comment lines must appear in docs/results.md in a block (a table row,
  a paragraph or a list item) that names that config (`demo.gin`), or in a block of the same section
  that names no config (the baselines shared by a section's configs). A figure in the README must
  appear in a block naming a config named on the same README line (anywhere in docs/results.md if
  the line names none); test_results_doc.py goes further and allows the README no figure at all.
* A header has at most one "measured" line (a comment line starting "# Measured", with its indented
  continuation lines). The header of every config that runs (all but the *_base.gin files) names the
  paper, the aim and the command, and links docs/results.md (smoke.gin: the command).
* The header's command dry-runs: `tfseg.train ... --dry_run` exits 0 with "data found". Data that are
  not here are replaced by small fixtures the way a user would point the command at theirs: a data
  path the command binds (image_dir, mask_dir, lmdb_dir) is bound again to a fixture folder, TFDS is
  mocked offline, and a `tools/convert_stylegan2.py --out=DIR` the block runs first is stood in for
  by DIR/config.json. The dry run itself is not relaxed: it must find the data.
"""
import contextlib
import glob
import json
import os
import re
import shlex

import numpy as np
import pytest
from absl import flags
from absl import logging  # noqa: F401  pylint: disable=unused-import  # defines --verbosity, which train reads
from PIL import Image

import lsun_fixture
from test_results_doc import FIGURE_PATTERNS, ILLUSTRATIVE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = "docs/results.md"
README = "README.md"
GIN_DIR = "gin_configs"
CONFIGS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, GIN_DIR, "*.gin")))
RUNNABLE = [c for c in CONFIGS if not c.endswith("_base.gin")]
#: A decimal right after one of these words is the value of a setting, not a measurement.
SETTING_WORDS = ("p", "psi", "lr", "decay", "lambda", "lambda_z", "eta", "threshold", "alpha >")
_SETTING_BEFORE = re.compile(r"(?:(?<![<>!=≤≥])=|--\w+|\b(?:" + "|".join(re.escape(w) for w in SETTING_WORDS)
                             + r"))\s*$")
_CONFIG_NAME = re.compile(r"(?<![\w.-])([a-z0-9_]+\.gin)\b")
_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")


def _read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


# -- figures ----------------------------------------------------------------------------------------
def figures(line):
    """The figures on one line of text, as `[(matched text, its number)]`; settings' values are not."""
    found = []
    for pattern in FIGURE_PATTERNS.values():
        for match in pattern.finditer(line):
            if _SETTING_BEFORE.search(line[:match.start()]):
                continue
            number = _NUMBER.search(match.group())
            if number:
                found.append((match.group(), number.group().replace(",", "")))
    return found


def _has_number(text, number):
    """Whether `number` appears in `text` as a number of its own (thousands commas ignored)."""
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    return re.search(r"(?<![\w.])" + re.escape(number) + r"(?![\w]|\.\d)", text) is not None


def results_blocks(markdown):
    """docs/results.md cut into `[(section, block text, {configs named})]`: each table row is a block,
    and so is each paragraph and each list item. A section is a level-2 heading and what follows."""
    blocks, section, current = [], "", []

    def close():
        if current:
            text = "\n".join(current)
            blocks.append((section, text, set(_CONFIG_NAME.findall(text))))
            current.clear()

    for line in markdown.splitlines():
        if line.startswith("## "):
            close()
            section = line[3:].strip()
        elif not line.strip() or line.startswith("#"):
            close()
        elif line.startswith("|") or re.match(r"\s*[-*] ", line):
            close()
            current.append(line)
            if line.startswith("|"):
                close()
        else:
            current.append(line)
    close()
    return blocks


def allowed_text(blocks, configs):
    """The text of docs/results.md a figure about `configs` may come from: the blocks naming one of
    them, and the blocks naming no config in the same sections. No config: the whole page."""
    if not configs:
        return "\n".join(text for _, text, _ in blocks)
    sections = {section for section, _, named in blocks if named & configs}
    return "\n".join(text for section, text, named in blocks
                     if named & configs or (section in sections and not named))


def comment_lines(gin_text):
    """`[(line number, text)]` of a gin file's comment lines."""
    return [(number, line) for number, line in enumerate(gin_text.splitlines(), 1) if line.lstrip().startswith("#")]


def header_lines(gin_text):
    """The leading comment block of a gin file, its header."""
    lines = []
    for line in gin_text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines


def measured_lines(gin_text):
    """The "measured" lines: comment lines starting "# Measured", each with its indented continuation."""
    found, current = [], None
    for line in gin_text.splitlines():
        if re.match(r"#\s?Measured\b", line):
            current = [line]
            found.append(current)
        elif current is not None and line.startswith("#   "):
            current.append(line)
        else:
            current = None
    return ["\n".join(lines) for lines in found]


def check_gin(name, gin_text, results_markdown):
    """Every problem of one gin file's comments against docs/results.md, as lines of text."""
    blocks = results_blocks(results_markdown)
    allowed = allowed_text(blocks, {name})
    problems = [f"{GIN_DIR}/{name}:{number}: {text!r} is not in {RESULTS} beside {name}"
                for number, line in comment_lines(gin_text) for text, value in figures(line)
                if not _has_number(allowed, value)]
    measured = measured_lines(gin_text)
    if len(measured) > 1:
        problems.append(f"{GIN_DIR}/{name}: {len(measured)} measured lines (at most one; the rest go to {RESULTS})")
    if not name.endswith("_base.gin"):
        header = "\n".join(header_lines(gin_text))
        wanted = ("Command",) if name == "smoke.gin" else ("Paper", "Aim", "Command", RESULTS)
        problems += [f"{GIN_DIR}/{name}: the header does not say {word!r}" for word in wanted if word not in header]
    return problems


def check_readme(readme_text, results_markdown):
    """Every README figure that docs/results.md does not hold beside the configs its line names."""
    blocks = results_blocks(results_markdown)
    problems = []
    for example in ILLUSTRATIVE:  # made-up output the README must show, not a measurement
        readme_text = readme_text.replace(example, "")
    for number, line in enumerate(readme_text.splitlines(), 1):
        allowed = allowed_text(blocks, set(_CONFIG_NAME.findall(line)))
        problems += [f"{README}:{number}: {text!r} is not in {RESULTS} beside the configs of its line"
                     for text, value in figures(line) if not _has_number(allowed, value)]
    return problems


@pytest.mark.parametrize("name", CONFIGS)
def test_gin_comments_quote_only_what_results_md_says_of_the_config(name):
    problems = check_gin(name, _read(os.path.join(ROOT, GIN_DIR, name)), _read(os.path.join(ROOT, RESULTS)))
    assert not problems, "\n".join(problems)


def test_readme_figures_agree_with_results_md():
    problems = check_readme(_read(os.path.join(ROOT, README)), _read(os.path.join(ROOT, RESULTS)))
    assert not problems, "\n".join(problems)


_RESULTS_SAMPLE = """# Measured results

## Quick start

| baseline | test fg IoU |
|---|---:|
| centred disc | 0.300 |

| config | minutes | fg IoU |
|---|---|---|
| `demo_a.gin` | 17.6 min | 0.650 |
| `demo_b.gin` | 25.7 min | 0.485 |

## Real photos

- `folder_a.gin` scored 0.737 in about 20 min.
"""
_GOOD_HEADER = """# A demo.
# Paper: Someone, 2019.
# Aim: fg IoU >= 0.70 (docs/results.md).
# Measured (docs/results.md): 17.6 min, test fg IoU 0.650 against the centred disc's 0.300.
# Command: python -m tfseg.train --gin_file=gin_configs/demo_a.gin
# Style mixing with p = 0.9, psi 0.3, decay 0.999, --th 0.9: settings, not figures.
tfseg.training.TrainConfig.batch_size = 32
"""


def test_the_checker_accepts_agreeing_figures_and_settings():
    assert figures("p = 0.9, psi 0.3, decay 0.999, --th 0.9, lr 2e-4, fg IoU >= 0.70") == [("0.70", "0.70")]
    assert check_gin("demo_a.gin", _GOOD_HEADER.replace("0.70", "0.650"), _RESULTS_SAMPLE) == []


@pytest.mark.parametrize("change, expected", [
    (("0.650 against", "0.655 against"), "'0.655'"),             # a drifted score
    (("17.6 min", "16.6 min"), "'16.6 min'"),                      # a drifted timing
    (("0.650 against", "0.485 against"), "'0.485'"),             # another config's score
    (("0.650 against", "0.737 against"), "'0.737'"),             # another section's score
    (("# Command", "# Measured again: 0.650.\n# Command"), "2 measured lines"),
    (("# Paper: Someone, 2019.\n", ""), "does not say 'Paper'"),
])
def test_the_checker_fails_a_header_that_disagrees(change, expected):
    header = _GOOD_HEADER.replace("0.70", "0.650")
    assert change[0] in header
    problems = check_gin("demo_a.gin", header.replace(*change), _RESULTS_SAMPLE)
    assert len(problems) == 1 and expected in problems[0], problems


def test_the_checker_fails_a_readme_figure_that_disagrees():
    assert check_readme("`demo_a.gin` learns: 0.650 in 17.6 min.\n", _RESULTS_SAMPLE) == []
    problems = check_readme("`demo_b.gin` learns: 0.650.\nIt runs at 38.2 min.\n", _RESULTS_SAMPLE)
    assert [p.split(":")[1] for p in problems] == ["1", "2"], problems


# -- the headers' commands dry-run ------------------------------------------------------------------
def header_commands(gin_text):
    """The commands of a header's "Command" block, each an argv list (backslash continuations joined)."""
    block, inside = [], False
    for line in header_lines(gin_text):
        body = line[1:]
        if re.match(r"\s?Command\b", body):
            inside = True
            block.append(body.split(":", 1)[1].strip() if ":" in body else "")
        elif inside and body.startswith("  "):
            block.append(body.strip())
        elif inside:
            break
    joined = re.sub(r"\\\n", " ", "\n".join(block))
    return [shlex.split(line) for line in joined.splitlines() if line.startswith("python")]


def _includes(name):
    """`name` and every gin file it includes, recursively."""
    text = _read(os.path.join(ROOT, GIN_DIR, name))
    names = [name]
    for included in re.findall(r"^include '([^']+)'", text, re.M):
        names += _includes(os.path.basename(included))
    return names


def _photo_fixture(folder):
    """32 small photos, 24 of them with masks named alike: every split of a folder config has photos
    (redo_lfw.gin trains only on the photos without masks)."""
    os.makedirs(os.path.join(folder, "photos"))
    os.makedirs(os.path.join(folder, "masks"))
    for i in range(32):
        image = lsun_fixture.photo(i, size=(40, 48))
        Image.fromarray(image).save(os.path.join(folder, "photos", f"photo_{i:02d}.jpg"))
        if i >= 24:
            continue
        mask = np.where(image.max(axis=-1, keepdims=True) > 140, 255, 0).astype(np.uint8)
        Image.fromarray(np.repeat(mask, 3, axis=-1)).save(os.path.join(folder, "masks", f"photo_{i:02d}.png"))
    lsun_fixture.write_lsun_lmdb(os.path.join(folder, "lsun"), num_images=6, num_corrupt=0)
    return {"image_dir": os.path.join(folder, "photos"), "mask_dir": os.path.join(folder, "masks"),
            "lmdb_dir": os.path.join(folder, "lsun")}


def _stand_in_for_a_conversion(argv, resolution):
    """`tools/convert_stylegan2.py --out=DIR` writes DIR/config.json (and weights a dry run does not
    read): a config-f generator and discriminator at `resolution`, as the converter records them."""
    out = next(a.split("=", 1)[1] for a in argv if a.startswith("--out="))
    os.makedirs(out, exist_ok=True)
    config = {"generator": dict(resolution=resolution, z_dim=512, w_dim=512, mapping_layers=8,
                                channel_base=32768, max_channels=512),
              "discriminator": dict(resolution=resolution, channel_base=32768, max_channels=512, mbstd_group=4),
              "source": "stand-in for a dry run", "generator_key": "g_ema"}
    with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as handle:
        json.dump(config, handle)


def _run_train(argv):
    """`python -m tfseg.train argv` in this process (a subprocess per config costs seconds each)."""
    from tfseg import train  # pylint: disable=import-outside-toplevel
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["tfseg.train", *argv])
    return train.main([])


def _resolution(name):
    import gin  # pylint: disable=import-outside-toplevel
    from tfseg import config, registry  # pylint: disable=import-outside-toplevel
    registry.import_configurables()
    config.parse([os.path.join(GIN_DIR, name)], [])
    resolution = gin.query_parameter("tfseg.training.TrainConfig.resolution")
    gin.clear_config()
    return resolution


def dry_run_problems(name, gin_text, folder, capsys):
    """Runs the train commands of `gin_text`'s header with --dry_run in `folder` (the current
    directory, holding a gin_configs link), data bound to fixtures; returns what went wrong."""
    commands = header_commands(gin_text)
    train_commands = [c for c in commands if c[:3] == ["python", "-m", "tfseg.train"]]
    if not train_commands:
        return [f"{name}: the header's Command block has no python -m tfseg.train"]
    itself = "--smoke" if name == "smoke.gin" else f"--gin_file={GIN_DIR}/{name}"
    if not any(itself in c for c in train_commands):
        return [f"{name}: the header's command does not run it ({itself})"]
    fixtures = _photo_fixture(os.path.join(folder, "fixture"))
    for argv in commands:
        if argv[:2] == ["python", "tools/convert_stylegan2.py"]:
            _stand_in_for_a_conversion(argv, _resolution(name))
    uses_tfds = any("@tfseg.data.tfds_source" in _read(os.path.join(ROOT, GIN_DIR, n)) for n in _includes(name))
    problems = []
    for argv in train_commands:
        overrides = [f"--gin_bindings={source}.{key}='{fixtures[key]}'" for source, key in
                     re.findall(r"(tfseg\.data\.\w+)\.(image_dir|mask_dir|lmdb_dir)\s*=", " ".join(argv))]
        if uses_tfds:
            import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
            mock = tfds.testing.mock_data(num_examples=8)
        else:
            mock = contextlib.nullcontext()
        with mock:
            try:
                code = _run_train([*argv[3:], *overrides, "--dry_run"])
            except flags.Error as err:  # a misspelled flag
                code, err_text = 2, str(err)
            else:
                err_text = ""
        out, err = capsys.readouterr()
        command = shlex.join(argv) + " --dry_run"
        if code != 0:
            problems.append(f"{name}: {command} exited {code}: {(err_text or err)[-2000:]}")
        elif "# dry run: config resolved, data found; not training." not in out:
            problems.append(f"{name}: {command}: " + "\n".join(l for l in out.splitlines() if l.startswith("# d")))
    return problems


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A scratch current directory with a link to gin_configs: the command's relative paths
    (runs/, pretrained/) land here."""
    monkeypatch.chdir(tmp_path)
    os.symlink(os.path.join(ROOT, GIN_DIR), GIN_DIR)
    return str(tmp_path)


@pytest.mark.parametrize("name", RUNNABLE)
def test_the_header_command_dry_runs(name, scratch, capsys):
    problems = dry_run_problems(name, _read(os.path.join(ROOT, GIN_DIR, name)), scratch, capsys)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("change, expected", [
    (("--model_dir=runs/demo", "--model_dir=runs/demo --gin_bindings=tfseg.training.TrainConfig.num_stepz=5"),
     "exited 2"),                                                   # a binding that does not resolve
    (("--model_dir=runs/demo", "--model_dir=runs/demo --gin_bindings=tfseg.data.make_dataset.source=@tfseg.data.tfrecord_source "
      "--gin_bindings=\"tfseg.data.tfrecord_source.file_pattern='/nowhere/{split}-*.tfrecord'\""),
     "data NOT ready"),                                             # data a fixture does not stand in for
    (("--gin_file=gin_configs/demo.gin", "--gin_file=gin_configs/demo_perturbgan.gin"), "does not run it"),
    (("--model_dir", "--model_dirr"), "exited 2"),                  # a misspelled flag
])
def test_the_dry_run_check_fails_a_broken_command(change, expected, scratch, capsys):
    header = _read(os.path.join(ROOT, GIN_DIR, "demo.gin"))
    assert change[0] in header
    problems = dry_run_problems("demo.gin", header.replace(*change, 1), scratch, capsys)
    assert len(problems) == 1 and expected in problems[0], problems
