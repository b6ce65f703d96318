"""docs/results.md is the only home of tfseg's measured figures; the README links to it.

The rule: README.md quotes no measured figure at all, so it cannot drift from docs/results.md. A
measured figure is anything of these shapes: a score-like decimal (0.706, 0.31), a timing (56 min,
17.6 minutes, 63.5 s, 2 h, 10:06), a rate or a size in memory (74.6 img/s, 8.9 GiB), or a speed ratio
(1.08x). Version pins (2.21, 0.1.0), image sizes (64 px), step counts and the code's settings in
commands do not have these shapes. Made-up example values the README must show (the REST example's
output) are listed in ILLUSTRATIVE. Every `docs/results.md#anchor` link in the README must name a
heading of docs/results.md.
"""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = "README.md"
RESULTS = "docs/results.md"

# Example output, not a measurement: TF Serving's REST reply in the serving section.
ILLUSTRATIVE = ('"foreground_fraction": 0.31',)

_NUMBER = r"\d+(?:[.,]\d+)*"
FIGURE_PATTERNS = {
    "score-like decimal": re.compile(r"(?<![\w.])0\.\d+(?!\w|\.\d)"),  # "... 0.706." ends a sentence
    "timing": re.compile(r"(?<![\w.])" + _NUMBER + r"\s*(?:min|mins|minutes?|s|secs?|seconds?|h|hours?)\b"),
    "clock time": re.compile(r"(?<![\w:.])\d{1,2}:\d{2}(?![\w:])"),
    "rate or memory": re.compile(r"(?<![\w.])" + _NUMBER + r"\s*(?:img/s|images/s|GiB|MiB|GB|MB)\b"),
    "speed ratio": re.compile(r"(?<![\w.])" + _NUMBER + r"\s?x\b(?!\s*\d)"),
}
_LINK_RE = re.compile(r"(?<![\w/])" + re.escape(RESULTS) + r"(?:#(?P<anchor>[\w-]+))?")
_HEADING_RE = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_FENCE_RE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def measured_figures(text):
    """`[(kind, line number, matched text)]` for every measured-looking figure in `text`."""
    for example in ILLUSTRATIVE:
        text = text.replace(example, " " * len(example))
    found = []
    for kind, pattern in FIGURE_PATTERNS.items():
        for match in pattern.finditer(text):
            found.append((kind, text.count("\n", 0, match.start()) + 1, match.group()))
    return sorted(found, key=lambda item: item[1])


def heading_anchors(markdown):
    """GitHub's anchors for the headings of `markdown`: lower case, punctuation dropped, spaces -> '-'."""
    anchors, seen = set(), {}
    for heading in _HEADING_RE.findall(_FENCE_RE.sub("", markdown)):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def broken_results_links(readme, results):
    """The README's `docs/results.md#anchor` anchors that name no heading of docs/results.md."""
    anchors = heading_anchors(results)
    return [m.group("anchor") for m in _LINK_RE.finditer(readme)
            if m.group("anchor") and m.group("anchor") not in anchors]


def _check(readme_path, results_path):
    """Every problem with a README / results pair, as lines of text (empty when both are right)."""
    readme = _read(readme_path)
    problems = [f"{README}:{line}: {kind} {text!r} (measured figures live in {RESULTS} only)"
                for kind, line, text in measured_figures(readme)]
    if not os.path.isfile(results_path):
        return problems + [f"{RESULTS} is missing"]
    if not _LINK_RE.search(readme):
        problems.append(f"{README} does not link to {RESULTS}")
    problems += [f"{README} links to {RESULTS}#{anchor}, which has no such section"
                 for anchor in broken_results_links(readme, _read(results_path))]
    return problems


def test_readme_quotes_no_measured_figure_and_its_links_into_results_resolve():
    problems = _check(os.path.join(ROOT, README), os.path.join(ROOT, RESULTS))
    assert not problems, "\n".join(problems)


def test_results_doc_holds_the_figures_the_readme_used_to_quote():
    results = _read(os.path.join(ROOT, RESULTS))
    for figure in ("0.650", "38.2 min", "0.737", "56 min", "63.5 s", "8.89 GiB", "10:06"):
        assert figure in results, f"{RESULTS} lost {figure!r}"


def _copy(tmp_path, readme, results=None):
    (tmp_path / "docs").mkdir()
    (tmp_path / README).write_text(readme, encoding="utf-8")
    if results is not None:
        (tmp_path / RESULTS).write_text(results, encoding="utf-8")
    return str(tmp_path / README), str(tmp_path / RESULTS)


@pytest.mark.parametrize("bad_line", [
    "The demo reaches test fg IoU 0.706 on Flowers-17.",
    "The demo reaches test fg IoU 0.706.",
    "It trains in 56 min on 2 cores.",
    "A step takes 63.5 s at 128 px.",
    "The suite takes 10:06 in CI.",
    "Inference runs at 1,100 img/s.",
    "Peak memory 8.9 GiB.",
    "tfseg is 1.08x the reference.",
])
def test_a_readme_quoting_a_figure_fails(tmp_path, bad_line):
    good_readme = _read(os.path.join(ROOT, README))
    readme_path, results_path = _copy(tmp_path, good_readme + "\n" + bad_line + "\n",
                                      _read(os.path.join(ROOT, RESULTS)))
    problems = _check(readme_path, results_path)
    assert len(problems) == 1 and README in problems[0], problems


def test_a_readme_linking_a_missing_section_fails(tmp_path):
    readme_path, results_path = _copy(
        tmp_path, "See [speed](docs/results.md#speed-on-a-gpu) and [demos](docs/results.md#demos).\n",
        "# Measured results\n\n## Demos\n\n| a | 0.5 |\n")
    assert _check(readme_path, results_path) == [
        f"{README} links to {RESULTS}#speed-on-a-gpu, which has no such section"]


def test_a_missing_results_doc_fails(tmp_path):
    readme_path, results_path = _copy(tmp_path, "See [results](docs/results.md).\n")
    assert _check(readme_path, results_path) == [f"{RESULTS} is missing"]


#: Docs beside results.md that explain without quoting: they link results.md for every figure.
FIGURE_FREE_DOCS = ("docs/performance.md", "docs/scaling.md", "docs/real_photos.md")
_RELATIVE_LINK_RE = re.compile(r"\((?:docs/)?results\.md#(?P<anchor>[\w-]+)\)")


@pytest.mark.parametrize("doc", FIGURE_FREE_DOCS)
def test_the_docs_beside_results_quote_no_figure_and_their_links_resolve(doc):
    text = _read(os.path.join(ROOT, doc))
    assert measured_figures(text) == [], f"{doc} quotes figures; they live in {RESULTS}"
    anchors = heading_anchors(_read(os.path.join(ROOT, RESULTS)))
    links = [m.group("anchor") for m in _RELATIVE_LINK_RE.finditer(text)]
    assert links and [a for a in links if a not in anchors] == [], links


@pytest.mark.parametrize("harmless", [
    'pip install "tensorflow-cpu>=2.21,<2.22" torch==2.13.0 tfseg==0.1.0',
    "python tools/prepare_data.py --resolution=64 --limit=100000   # 64 px, 3x3 kernels",
    "docker run -p 8501:8501 tensorflow/serving; TF_CONFIG hostA:2222",
    "two steps per stage; 0 skips a stage; images above 4096 x 4096 pixels",
])
def test_settings_versions_and_sizes_are_not_figures(harmless):
    assert measured_figures(harmless) == []
