"""The suite's shared runs rely on `--dist loadgroup` (pytest.ini): each module marked with an
`xdist_group` runs on one worker, so its session fixture (a trained run) is made once. pytest 9.2
with pytest-xdist 3.8 silently dropped the groups (pytest-xdist issue #1386) and the suite made
every shared run twice; this fails when a pytest / pytest-xdist pair does that again.
"""
import pytest

pytestmark = pytest.mark.xdist_group("grouping_check")


def test_the_xdist_group_reaches_the_scheduler(request):
    if not hasattr(request.config, "workerinput"):
        pytest.skip("runs only as a pytest-xdist worker")
    if not request.config.getvalue("loadgroup"):
        pytest.skip("the run did not ask for --dist loadgroup")
    assert request.node.nodeid.endswith("@grouping_check"), (
        f"{request.node.nodeid}: --dist loadgroup did not tag this test with its xdist_group, so grouped "
        "modules are spread over workers and their shared runs are made once per worker. Install a "
        "pytest / pytest-xdist pair that groups (setup.py's test extra pins one).")
