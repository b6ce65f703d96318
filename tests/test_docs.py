"""The method description lives in docs/methods.md, and every section the code cites exists there.

Code comments, docstrings and gin configs cite the description as ``docs/methods.md §N`` or ``§N.M``. These
tests fail if a file still points at the old, out-of-repository specification, or if a cited section number
(or a cited metric name) has no match in docs/methods.md.
"""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = "docs/methods.md"
SCANNED_DIRS = ("tfseg", "gin_configs", "tools", "tests", "docs", ".ci")
SCANNED_FILES = ("README.md", "setup.py")

# Built from parts so that this file does not trip its own check.
_OLD_NAME = "METH" + "ODS"
# Any spelling of the description's file name, in any case and after any path; only DOC itself is allowed.
_DOC_NAME_RE = re.compile(r"[\w./-]*" + "meth" + r"ods\.md", re.IGNORECASE)
# The old short forms: "<OLD> §4", "<OLD> section 6", "<OLD> ``name``".
_OLD_SHORT_RE = re.compile(r"(?<![\w/])" + _OLD_NAME + r"(?![\w.])\s*(?:§|section\b|``)")
# "docs/methods.md §2.6, §1.6, §3.6 and §4", "docs/methods.md §1.2-1.4", "docs/methods.md section 6".
_NUM = r"\d+(?:\.\d+)?"
_REF_RE = re.compile(
    re.escape(DOC)
    + r"(?P<refs>(?:[ \t,;]*(?:(?:and|or)\s+)?(?:§|section\s+)\s*" + _NUM + r"(?:\s*[-–]\s*" + _NUM + r")?)+)"
)
_ONE_REF_RE = re.compile(r"(?P<start>" + _NUM + r")(?:\s*[-–]\s*(?P<end>" + _NUM + r"))?")
_NAME_REF_RE = re.compile(re.escape(DOC) + r"\s*``(?P<name>\w+)``")
_HEADING_RE = re.compile(r"^#{2,6}\s+(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)


def _repository_files():
    paths = [os.path.join(ROOT, name) for name in SCANNED_FILES]
    for top in SCANNED_DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
            paths.extend(os.path.join(dirpath, f) for f in sorted(filenames) if not f.endswith(".pyc"))
    for path in paths:
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as handle:
            data = handle.read()
        if b"\0" in data:  # binary fixture
            continue
        yield os.path.relpath(path, ROOT), data.decode("utf-8", errors="replace")


def _line_of(text, offset):
    return text.count("\n", 0, offset) + 1


def _doc_text():
    path = os.path.join(ROOT, DOC)
    assert os.path.isfile(path), f"{DOC} is missing"
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _doc_sections():
    return set(_HEADING_RE.findall(_doc_text()))


def _cited_sections(refs):
    """Section numbers named by one reference group; a range "1.2-1.4" names 1.2, 1.3 and 1.4."""
    cited = []
    for match in _ONE_REF_RE.finditer(refs):
        start, end = match.group("start"), match.group("end")
        cited.append(start)
        if end is None:
            continue
        cited.append(end)
        start_parts, end_parts = start.split("."), end.split(".")
        if len(start_parts) == len(end_parts) == 2 and start_parts[0] == end_parts[0]:
            major = start_parts[0]
            cited.extend(f"{major}.{minor}" for minor in range(int(start_parts[1]) + 1, int(end_parts[1])))
    return cited


def test_no_reference_to_the_old_specification():
    offenders = []
    for rel, text in _repository_files():
        for match in _DOC_NAME_RE.finditer(text):
            if match.group() != DOC:
                offenders.append(f"{rel}:{_line_of(text, match.start())}: {match.group()!r}")
        for match in _OLD_SHORT_RE.finditer(text):
            offenders.append(f"{rel}:{_line_of(text, match.start())}: {match.group()!r}")
    assert not offenders, f"cite {DOC} instead:\n" + "\n".join(offenders)


def test_nothing_points_outside_the_repository():
    """A clone has no sibling folders: no file names a path in the developers' shared folder."""
    outside = re.compile(r"\.\./" + "sha" + r"red/")  # built from parts, not to match itself
    offenders = [f"{rel}:{_line_of(text, m.start())}" for rel, text in _repository_files()
                 for m in outside.finditer(text)]
    assert not offenders, "name a placeholder path (/path/to/...) instead:\n" + "\n".join(offenders)


def test_doc_has_the_numbered_sections():
    sections = _doc_sections()
    for number in ("0", "0.1", "1", "1.9", "2", "2.9", "3", "3.9", "4", "5", "6", "7"):
        assert number in sections, f"{DOC} has no section {number}"


def test_every_cited_section_exists():
    sections = _doc_sections()
    doc_text = _doc_text()
    cited, missing = 0, []
    for rel, text in _repository_files():
        for match in _REF_RE.finditer(text):
            for number in _cited_sections(match.group("refs")):
                cited += 1
                if number not in sections:
                    missing.append(f"{rel}:{_line_of(text, match.start())}: §{number}")
        for match in _NAME_REF_RE.finditer(text):
            cited += 1
            if f"`{match.group('name')}`" not in doc_text:
                missing.append(f"{rel}:{_line_of(text, match.start())}: {match.group('name')}")
    assert cited > 0, f"no reference to {DOC} found: the pattern no longer matches how the code cites it"
    assert not missing, f"cited but not in {DOC}:\n" + "\n".join(missing)


@pytest.mark.parametrize(
    "refs, expected",
    [
        (" §2.6, §1.6, §3.6 and §4", ["2.6", "1.6", "3.6", "4"]),
        (" §1.2-1.4", ["1.2", "1.4", "1.3"]),
        (" section 6", ["6"]),
    ],
)
def test_cited_sections_parsing(refs, expected):
    assert _cited_sections(refs) == expected
