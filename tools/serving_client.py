"""Segment a folder of images with a tfseg model behind TF Serving's REST API.

    python tools/serving_client.py --server=http://localhost:8501 --model=tfseg --images=DIR --out=DIR

Each image file's bytes go base64-encoded in TF Serving's row format, one `{"b64": ...}` object per
image (the signature `serving_default` has one named input, `image_bytes`, so a row is just its value):

    POST /v1/models/tfseg[/versions/N]:predict
    {"instances": [{"b64": "iVBORw0KGgo..."}, {"b64": "/9j/4AAQ..."}]}

and the answer holds one object per image; outputs whose names end in `_bytes` come back base64-encoded:

    {"predictions": [{"mask_png_bytes": {"b64": "..."}, "foreground_fraction": 0.31, "mask": [[[0.02], ...]]}, ...]}

(`--format=columnar` sends `{"inputs": {"image_bytes": [{"b64": ...}, ...]}}` instead and reads
`{"outputs": {...}}`.) The masks are written as `<name>_mask.png` (grey, 255 = foreground, at the
image's size) plus `predictions.json`. Requests are batched (`--batch_size`), time out after
`--timeout` seconds and are retried with exponential back-off on connection errors, timeouts and HTTP
429/502/503/504. One bad image fails TF Serving's whole batch with HTTP 400 and `{"error": ...}`; the
client then sends that batch's images one by one, reports the server's error for each bad one and
carries on with the rest.

Standard library, pillow and tfseg's stdlib-only `tfseg.image_files` (no TensorFlow), so it runs on any
machine with this repository that can reach the server.
"""
from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

from absl import app, flags

# Run as a script from anywhere in the repository.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The photo formats and the folder listing (links followed once) of every tfseg program.
from tfseg.image_files import list_images  # noqa: E402  pylint: disable=wrong-import-position

INPUT_NAME = "image_bytes"
RETRY_STATUSES = (429, 502, 503, 504)


class ServerError(Exception):
    """The server answered with an error: HTTP `status` and the text of its `{"error": ...}`."""

    def __init__(self, status, message):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class Unreachable(Exception):
    """No answer after all retries (connection refused, timeouts, 5xx overload)."""


# --------------------------------------------------------------------------------------------------
# The REST request and response formats.
# --------------------------------------------------------------------------------------------------


def build_request(images, signature_name=None, fmt="row"):
    """The JSON body of a predict request for a batch of image files.

    Args:
        images: list of bytes, each a JPEG or PNG file.
        signature_name: None for `serving_default`.
        fmt: "row" (`{"instances": [{"b64": ...}, ...]}`) or "columnar"
            (`{"inputs": {"image_bytes": [{"b64": ...}, ...]}}`).

    Returns:
        A JSON-serialisable dict.
    """
    values = [{"b64": base64.b64encode(data).decode("ascii")} for data in images]
    if fmt == "row":
        body = {"instances": values}
    elif fmt == "columnar":
        body = {"inputs": {INPUT_NAME: values}}
    else:
        raise ValueError(f"fmt must be 'row' or 'columnar', got {fmt!r}")
    if signature_name:
        body["signature_name"] = signature_name
    return body


class MalformedRow(Exception):
    """One image's part of the answer cannot be read (e.g. bad base64); the other images are fine."""


def _decode_value(value):
    if isinstance(value, dict) and set(value) == {"b64"}:
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (ValueError, TypeError) as err:
            raise MalformedRow(f"the answer's base64 cannot be decoded ({err})") from err
    return value


def _decode_row(row):
    """One image's outputs, decoded; a row that cannot be read becomes `{"_error": message}`."""
    if not isinstance(row, dict):
        return {"_error": f"the answer for this image is not an object: {str(row)[:100]}"}
    try:
        return {name: _decode_value(v) for name, v in row.items()}
    except MalformedRow as err:
        return {"_error": str(err)}


def parse_response(body, count):
    """Per-image output dicts from a predict response (row or columnar), `*_bytes` values decoded.

    Args:
        body: the parsed JSON answer.
        count: number of images sent.

    Returns:
        list of `count` dicts, e.g. `{"mask_png_bytes": b"\\x89PNG...", "foreground_fraction": 0.3, ...}`.
    """
    if not isinstance(body, dict):
        raise ServerError(200, f"the answer is not a JSON object: {str(body)[:200]}")
    if "error" in body:
        raise ServerError(200, body["error"])
    if "predictions" in body and isinstance(body["predictions"], list):
        rows = [_decode_row(row) for row in body["predictions"]]
    elif "outputs" in body:
        outputs = body["outputs"]
        if not isinstance(outputs, dict):
            raise ServerError(200, f"the answer's 'outputs' is not an object: {str(outputs)[:200]}")
        try:
            rows = [_decode_row({name: values[i] for name, values in outputs.items()}) for i in range(count)]
        except (IndexError, TypeError, KeyError) as err:
            raise ServerError(200, f"the answer's 'outputs' do not hold {count} images ({err})") from err
    else:
        raise ServerError(200, f"the answer has neither 'predictions' nor 'outputs': {str(body)[:200]}")
    if len(rows) != count:
        raise ServerError(200, f"sent {count} images, got {len(rows)} predictions back")
    return rows


def short_error(message):
    """The useful part of a TF Serving error: the model's check message, without graph-node noise."""
    match = re.search(r"assertion failed: \[(.*?)\]\s*(?:\n|\[\[|$)", message, re.S)
    if match:
        return match.group(1).strip()
    message = re.sub(r"\{\{[^}]*\}\}", "", message)
    message = re.split(r"\s*\[\[|\n", message.strip())[0]
    return message.strip() or "unknown server error"


# --------------------------------------------------------------------------------------------------
# The client.
# --------------------------------------------------------------------------------------------------


class ServingClient:
    """Predict requests to one model on a TF Serving REST endpoint.

    Args:
        server: e.g. "http://localhost:8501".
        model: the model name (TF Serving's MODEL_NAME).
        version: a version number, or None for the latest.
        signature_name: None for `serving_default`.
        fmt: "row" or "columnar" request format.
        timeout: seconds per request.
        retries: extra attempts after a connection error, timeout or HTTP 429/502/503/504.
        backoff: first wait between attempts in seconds, doubled each time.
    """

    def __init__(self, server, model, version=None, signature_name=None, fmt="row", timeout=30.0, retries=3,
                 backoff=0.5):
        path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "") + ":predict"
        self.url = server.rstrip("/") + path
        self.signature_name = signature_name
        self.fmt = fmt
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    def _post(self, body):
        """POSTs `body`; the whole exchange, not each socket read, must end within `self.timeout`."""
        data = json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.url, data=data, method="POST",
                                         headers={"Content-Type": "application/json"})
        deadline = time.monotonic() + self.timeout
        chunks = []
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                while True:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the answer took longer than --timeout={self.timeout:g} s")
                    chunk = response.read1(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                if response.length:  # the connection closed before Content-Length bytes came
                    raise http.client.IncompleteRead(b"".join(chunks), response.length)
        except http.client.IncompleteRead as err:
            raise ServerError(200, f"the answer was cut short ({err})") from err
        text = b"".join(chunks).decode("utf-8", "replace")
        try:
            return json.loads(text)
        except ValueError as err:
            raise ServerError(200, f"the answer is not JSON: {text[:200]!r}") from err

    def predict(self, images):
        """Segments a batch of image files; returns one output dict per image.

        Raises:
            ServerError: the server refused the request (e.g. HTTP 400 for a bad image).
            Unreachable: no answer after all retries.
        """
        body = build_request(images, self.signature_name, self.fmt)
        wait, last = self.backoff, None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(wait)
                wait *= 2
            try:
                return parse_response(self._post(body), len(images))
            except urllib.error.HTTPError as err:
                text = err.read().decode("utf-8", "replace")
                try:
                    message = json.loads(text).get("error", text)
                except (ValueError, AttributeError):
                    message = text
                if err.code not in RETRY_STATUSES:
                    raise ServerError(err.code, message) from err
                last = f"HTTP {err.code}: {message}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                last = str(getattr(err, "reason", err))
        raise Unreachable(f"{self.url}: no answer after {self.retries + 1} attempts ({last})")


def output_stems(relative_paths):
    """Output name per input: the path without extension, or with it (a.jpg -> a_jpg) where two collide."""
    stems = [os.path.splitext(p)[0] for p in relative_paths]
    return [stem if stems.count(stem) == 1 else p.replace(".", "_") for stem, p in zip(stems, relative_paths)]


def read_image(path):
    """The file's bytes if it is a JPEG or PNG, else a PNG made with pillow; ValueError if unreadable."""
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise ValueError("empty file")
    if data.startswith(b"\x89PNG\r\n\x1a\n") or data.startswith(b"\xff\xd8\xff"):
        return data
    from PIL import Image  # pylint: disable=import-outside-toplevel
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
    except Exception as err:  # pylint: disable=broad-except
        raise ValueError(f"not an image ({type(err).__name__})") from err
    return buffer.getvalue()


def segment_folder(client, images_dir, out_dir, batch_size=8, stream=None):
    """Sends every image under `images_dir` to the server and writes the returned masks to `out_dir`.

    Returns:
        dict with "written" (relative paths), "errors" ({relative path: message}) and
        "foreground_fraction" ({relative path: value}).

    Raises:
        Unreachable: the server did not answer (the images not yet sent are not attempted).
        ServerError: HTTP 404, the server does not have the model or version.
    """
    stream = stream or sys.stderr
    files = list_images(images_dir)
    stems = dict(zip(files, output_stems(files)))
    os.makedirs(out_dir, exist_ok=True)
    written, errors, fractions = [], {}, {}

    def report(rel, message):
        errors[rel] = message
        stream.write(f"error: {rel}: {message}\n")

    def send(items):
        try:
            return list(zip(items, client.predict([data for _, data in items])))
        except ServerError as err:
            if err.status == 404:
                raise  # no such model or version: every image would fail the same way
            if len(items) == 1 or err.status != 400:
                for rel, _ in items:
                    report(rel, short_error(err.message).replace("image_bytes[0]", "the file")
                           if len(items) == 1 else f"HTTP {err.status}: {short_error(err.message)}")
                return []
            # TF Serving fails the whole batch for one bad image: find it by sending each alone.
            return [result for item in items for result in send([item])]

    try:
        _send_all(files, images_dir, out_dir, batch_size, stems, send, report, written, fractions, stream)
    finally:  # also when the server goes away mid-folder: what was received is kept
        with open(os.path.join(out_dir, "predictions.json"), "w") as f:
            json.dump({"server": client.url, "foreground_fraction": fractions, "errors": errors}, f, indent=2,
                      sort_keys=True)
    return {"written": written, "errors": errors, "foreground_fraction": fractions}


def _send_all(files, images_dir, out_dir, batch_size, stems, send, report, written, fractions, stream):
    """The batches of `segment_folder`: read, send, write each mask."""
    for start in range(0, len(files), batch_size):
        items = []
        for rel in files[start:start + batch_size]:
            try:
                items.append((rel, read_image(os.path.join(images_dir, rel))))
            except (OSError, ValueError) as err:
                report(rel, str(err))
        for (rel, _), output in (send(items) if items else []):
            if "_error" in output:
                report(rel, output["_error"])
                continue
            png = output.get("mask_png_bytes")
            if not isinstance(png, bytes):
                report(rel, "the answer has no mask_png_bytes (is this a tfseg model?)")
                continue
            target = os.path.join(out_dir, stems[rel] + "_mask.png")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(png)
            written.append(rel)
            try:
                fractions[rel] = float(output["foreground_fraction"])
            except (KeyError, TypeError, ValueError):
                pass  # the mask is what matters; a missing or odd fraction is left out
        stream.write(f"{min(start + batch_size, len(files))}/{len(files)} images sent\n")


# --------------------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------------------

FLAGS = flags.FLAGS


def define_flags():
    """Defines the command-line flags (only when run as a script, so importing this module adds none)."""
    flags.DEFINE_string("server", "http://localhost:8501", "TF Serving's REST address.")
    flags.DEFINE_string("model", "tfseg", "Model name on the server (its MODEL_NAME).")
    flags.DEFINE_integer("version", None, "Model version; default: the latest the server has.")
    flags.DEFINE_string("images", None, "Folder of images (JPEG or PNG; others are converted), searched "
                        "recursively.")
    flags.DEFINE_string("out", None, "Output folder for <name>_mask.png and predictions.json.")
    flags.DEFINE_integer("batch_size", 8, "Images per request.")
    flags.DEFINE_enum("format", "row", ["row", "columnar"], "REST request format: instances (row) or inputs.")
    flags.DEFINE_float("timeout", 30.0, "Seconds per request.")
    flags.DEFINE_integer("retries", 3, "Retries after connection errors, timeouts and HTTP 429/502/503/504.")


def main(argv):
    del argv
    if not FLAGS.images or not FLAGS.out:
        print("error: --images=<folder of images> and --out=<output folder> are required", file=sys.stderr)
        return 2
    if not os.path.isdir(FLAGS.images) or not list_images(FLAGS.images):
        print(f"error: --images={FLAGS.images} is not a folder holding images", file=sys.stderr)
        return 2
    client = ServingClient(FLAGS.server, FLAGS.model, FLAGS.version, fmt=FLAGS.format, timeout=FLAGS.timeout,
                           retries=FLAGS.retries)
    try:
        summary = segment_folder(client, FLAGS.images, FLAGS.out, max(1, FLAGS.batch_size))
    except Unreachable as err:
        print(f"error: cannot reach the model: {err}. Is TF Serving running (see README, 'Serving with TF "
              "Serving') and is --server right?", file=sys.stderr)
        return 1
    except ServerError as err:
        print(f"error: {client.url}: {err}. Check --model and --version against the server's "
              f"MODEL_NAME and the version folders it loaded.", file=sys.stderr)
        return 1
    print(f"wrote {len(summary['written'])} masks to {FLAGS.out}"
          + (f"; {len(summary['errors'])} image(s) failed (see {FLAGS.out}/predictions.json)"
             if summary["errors"] else ""))
    return 0 if summary["written"] else 1


if __name__ == "__main__":
    define_flags()
    app.run(lambda argv: sys.exit(main(argv)))
