"""tools/serving_client.py against servers that misbehave: a trickled body, malformed answers.

A local HTTP server on 127.0.0.1 answers every request with one canned misbehaviour; every request
loop here is bounded in count and time.
"""
import base64
import http.server
import importlib.util
import io
import json
import os
import threading
import time

import numpy as np
from PIL import Image
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("serving_client", os.path.join(REPO, "tools", "serving_client.py"))
serving_client = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(serving_client)


def _png(value):
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 4), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _answer(rows):
    return json.dumps({"predictions": rows}).encode()


GOOD_ROW = {"mask_png_bytes": {"b64": base64.b64encode(_png(255)).decode()}, "foreground_fraction": 1.0}
BEHAVIOURS = {
    "trickle": None,  # sends a valid answer one byte at a time, 0.05 s apart
    "not_json": b"<html>proxy error</html>",
    "null": b"null",
    "bad_base64_second": _answer([GOOD_ROW, {"mask_png_bytes": {"b64": "***not base64***"}}]),
    "short_body": b'{"predictions": [',  # Content-Length promises more
}


class _Handler(http.server.BaseHTTPRequestHandler):
    behaviour = "not_json"

    def do_POST(self):  # noqa: N802  (http.server's naming)
        length = int(self.headers.get("Content-Length", 0))
        count = len(json.loads(self.rfile.read(length))["instances"])
        body = BEHAVIOURS[self.behaviour] or _answer([GOOD_ROW] * count)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body) + (100 if self.behaviour == "short_body" else 0)))
        self.end_headers()
        if self.behaviour == "trickle":
            for i in range(min(len(body), 200)):  # bounded: at most 10 s
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
                time.sleep(0.05)
        else:
            self.wfile.write(body)

    def log_message(self, *args):
        del args


def _serve(behaviour):
    handler = type("Handler", (_Handler,), {"behaviour": behaviour})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _photos(folder, n=2):
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(os.path.join(folder, f"p{i}.png"))
    return folder


def _segment_two_photos(behaviour, tmp_path):
    """`segment_folder`'s summary for two photos sent as one batch to a server that misbehaves so."""
    server = _serve(behaviour)
    try:
        client = serving_client.ServingClient(f"http://127.0.0.1:{server.server_port}", "m", timeout=5, retries=0)
        return serving_client.segment_folder(client, _photos(str(tmp_path / "in")), str(tmp_path / "out"),
                                             batch_size=2, stream=io.StringIO())
    finally:
        server.shutdown()


def test_a_trickled_answer_is_cut_at_the_whole_request_deadline():
    server = _serve("trickle")
    try:
        client = serving_client.ServingClient(f"http://127.0.0.1:{server.server_port}", "m", timeout=1.0, retries=0)
        start = time.monotonic()
        with pytest.raises(serving_client.Unreachable, match="longer than --timeout=1 s"):
            client.predict([b"x"])
        assert time.monotonic() - start < 3.0  # not 10 s of trickle
    finally:
        server.shutdown()


@pytest.mark.parametrize("behaviour, reason", [("not_json", "not JSON"), ("null", "not a JSON object"),
                                               ("short_body", "cut short")])
def test_a_malformed_answer_is_reported_per_image_and_predictions_json_is_kept(tmp_path, behaviour, reason):
    summary = _segment_two_photos(behaviour, tmp_path)
    assert summary["written"] == [] and sorted(summary["errors"]) == ["p0.png", "p1.png"]
    assert all(reason in message for message in summary["errors"].values()), summary["errors"]
    with open(tmp_path / "out" / "predictions.json") as f:
        assert sorted(json.load(f)["errors"]) == ["p0.png", "p1.png"]


def test_one_undecodable_row_costs_only_its_own_image(tmp_path):
    summary = _segment_two_photos("bad_base64_second", tmp_path)
    assert summary["written"] == ["p0.png"]
    assert list(summary["errors"]) == ["p1.png"] and "base64" in summary["errors"]["p1.png"]
    assert (tmp_path / "out" / "p0_mask.png").read_bytes() == _png(255)
