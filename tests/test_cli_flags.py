"""The flags tfseg's commands share are defined once (tfseg/cli_flags.py) and listed by each command's --help."""
import glob
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ("train", "evaluate", "export", "predict")


def test_gin_bindings_is_defined_in_one_place():
    definitions = []
    for path in glob.glob(os.path.join(REPO, "tfseg", "**", "*.py"), recursive=True):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        definitions += [os.path.relpath(path, REPO)] * len(re.findall(r"DEFINE_\w+\(\s*[\"']gin_bindings[\"']", text))
    assert definitions == [os.path.join("tfseg", "cli_flags.py")]


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_lists_gin_bindings_and_its_alias_in_its_help(command):
    result = subprocess.run([sys.executable, "-m", f"tfseg.{command}", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "--gin_bindings: Extra gin bindings" in result.stdout and "--gin_param: Alias for --gin_bindings" in result.stdout


def test_the_commands_imported_into_one_process_share_the_flag():
    script = ("import tfseg.train, tfseg.evaluate, tfseg.export, tfseg.predict\n"
              "from absl import flags\n"
              "flags.FLAGS(['x', '--gin_param=a = 1', '--gin_bindings=b = 2'])\n"
              "print(flags.FLAGS.gin_bindings)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "['a = 1', 'b = 2']"
