"""A stand-in for TF Serving's REST API, for tests only (the real binary cannot be installed here).

It serves SavedModels on 127.0.0.1 with TF Serving's request and response formats
(https://www.tensorflow.org/tfx/serving/api_rest):

* ``POST /v1/models/<name>[/versions/<v>]:predict`` with ``signature_name`` (default
  ``serving_default``) and either row format ``{"instances": [...]}`` or columnar ``{"inputs": ...}``;
  a signature with one input takes plain values as rows, ``{"b64": "..."}`` is decoded to bytes;
* answers ``{"predictions": [{output: value, ...}, ...]}`` (row) or ``{"outputs": {output: [...]}}``
  (columnar); outputs named ``*_bytes`` are encoded as ``{"b64": "..."}``;
* errors as ``{"error": "<message>"}`` with TF Serving's HTTP statuses: 400 for a bad request or an
  ``InvalidArgument`` from the model, 404 for an unknown model or version, 500 otherwise;
* ``GET /v1/models/<name>`` returns the model status.

`decode_request` and `encode_response` are what tests use to check a request body without HTTP.
"""
from __future__ import annotations

import base64
import contextlib
import http.server
import json
import re
import threading

import numpy as np
import tensorflow as tf


class BadRequest(ValueError):
    """A request TF Serving would refuse with HTTP 400."""


def _from_b64(value):
    """Replaces every `{"b64": "..."}` object in a nested JSON value by its bytes (TF Serving's rule)."""
    if isinstance(value, dict):
        if set(value) == {"b64"} and isinstance(value["b64"], str):
            return base64.b64decode(value["b64"])
        raise BadRequest(f"unexpected JSON object {list(value)} where a tensor value was expected")
    if isinstance(value, list):
        return [_from_b64(v) for v in value]
    return value


def _is_b64(value):
    return isinstance(value, dict) and set(value) == {"b64"}


def _tensor(value, spec, name):
    try:
        if spec.dtype == tf.string:
            return tf.constant(np.array(value, dtype=object), tf.string)
        return tf.constant(np.array(value), spec.dtype)
    except (ValueError, TypeError) as err:
        raise BadRequest(f"input '{name}' could not be parsed as {spec.dtype.name}: {err}") from err


def decode_request(body, signatures):
    """Decodes a predict request as TF Serving's REST layer does.

    Args:
        body: the request JSON, parsed.
        signatures: a loaded SavedModel's `.signatures`.

    Returns:
        `(signature_name, {input name: tf.Tensor}, row)`; `row` is True for the "instances" format.

    Raises:
        BadRequest: an unknown signature, both or neither of "instances"/"inputs", unknown inputs.
    """
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    name = body.get("signature_name", "serving_default")
    if name not in signatures:
        raise BadRequest(f"Serving signature name: \"{name}\" not found in signature def")
    specs = signatures[name].structured_input_signature[1]
    if ("instances" in body) == ("inputs" in body):
        raise BadRequest("JSON Value must have exactly one of 'instances' (row format) or 'inputs' (columnar "
                         "format)")
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list):
            raise BadRequest("'instances' must be a list")
        if len(specs) == 1 and not (rows and isinstance(rows[0], dict) and not _is_b64(rows[0])):
            (input_name,) = specs
            columns = {input_name: _from_b64(rows)}
        else:
            columns = {}
            for row in rows:
                if not isinstance(row, dict) or _is_b64(row):
                    raise BadRequest("with several named inputs every instance must be an object of them")
                for key, value in row.items():
                    columns.setdefault(key, []).append(_from_b64(value))
        row_format = True
    else:
        inputs = body["inputs"]
        if isinstance(inputs, dict) and not _is_b64(inputs):
            columns = {key: _from_b64(value) for key, value in inputs.items()}
        elif len(specs) == 1:
            columns = {next(iter(specs)): _from_b64(inputs)}
        else:
            raise BadRequest("'inputs' must name the inputs of a signature with several")
        row_format = False
    unknown = set(columns) - set(specs)
    missing = set(specs) - set(columns)
    if unknown or missing:
        raise BadRequest(f"inputs {sorted(unknown)} are not in the signature and {sorted(missing)} are missing; "
                         f"signature '{name}' takes {sorted(specs)}")
    return name, {key: _tensor(value, specs[key], key) for key, value in columns.items()}, row_format


def _json_value(name, value):
    if isinstance(value, np.ndarray):
        return [_json_value(name, v) for v in value]
    if isinstance(value, bytes):
        if name.endswith("_bytes"):
            return {"b64": base64.b64encode(value).decode("ascii")}
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def encode_response(outputs, row_format):
    """The JSON answer of TF Serving for `outputs` (dict of tf.Tensor with a shared batch dimension)."""
    arrays = {name: tensor.numpy() for name, tensor in outputs.items()}
    if row_format:
        n = len(next(iter(arrays.values())))
        if len(arrays) == 1:
            (name, array), = arrays.items()
            return {"predictions": [_json_value(name, array[i]) for i in range(n)]}
        return {"predictions": [{name: _json_value(name, a[i]) for name, a in arrays.items()} for i in range(n)]}
    if len(arrays) == 1:
        (name, array), = arrays.items()
        return {"outputs": _json_value(name, array)}
    return {"outputs": {name: _json_value(name, a) for name, a in arrays.items()}}


_PREDICT = re.compile(r"^/v1/models/(?P<model>[^/:]+)(?:/versions/(?P<version>\d+))?:predict$")
_STATUS = re.compile(r"^/v1/models/(?P<model>[^/:]+)(?:/versions/(?P<version>\d+))?$")


class FakeServing:
    """Serves `{model name: {version: SavedModel folder}}` on 127.0.0.1 (a free port).

    Attributes:
        url: "http://127.0.0.1:<port>".
        requests: parsed bodies of the predict requests received, in order.
        fail_next: list of HTTP statuses to answer the next predict requests with (e.g. [503] to test
            retries), consumed one per request.
    """

    def __init__(self, models):
        self.models = {name: {int(v): tf.saved_model.load(path) for v, path in versions.items()}
                       for name, versions in models.items()}
        self.requests = []
        self.fail_next = []
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def _find(self, model, version):
        versions = self.models.get(model)
        if not versions or (version is not None and int(version) not in versions):
            label = f"Specific({model}, {version})" if version else f"Latest({model})"
            return None, f"Servable not found for request: {label}"
        return versions[int(version) if version else max(versions)], None

    def predict(self, model, version, body):
        """(HTTP status, JSON answer) of one predict request."""
        with self._lock:
            self.requests.append(body)
            if self.fail_next:
                status = self.fail_next.pop(0)
                return status, {"error": f"injected failure {status}"}
        loaded, error = self._find(model, version)
        if error:
            return 404, {"error": error}
        try:
            name, inputs, row_format = decode_request(body, loaded.signatures)
            outputs = loaded.signatures[name](**inputs)
        except BadRequest as err:
            return 400, {"error": str(err)}
        except tf.errors.InvalidArgumentError as err:
            return 400, {"error": err.message}
        except tf.errors.OpError as err:
            return 500, {"error": err.message}
        return 200, encode_response(outputs, row_format)

    def _handler(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, status, body):
                data = json.dumps(body).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802 (http.server's naming)
                match = _PREDICT.match(self.path)
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if not match:
                    return self._answer(404, {"error": f"Malformed request: POST {self.path}"})
                try:
                    body = json.loads(raw.decode("utf-8"))
                except ValueError as err:
                    return self._answer(400, {"error": f"JSON Parse error: {err}"})
                return self._answer(*fake.predict(match["model"], match["version"], body))

            def do_GET(self):  # noqa: N802
                match = _STATUS.match(self.path)
                loaded, error = fake._find(match["model"], match["version"]) if match else (None, "Malformed")
                if error:
                    return self._answer(404, {"error": error})
                versions = fake.models[match["model"]]
                shown = [int(match["version"])] if match["version"] else sorted(versions)
                return self._answer(200, {"model_version_status": [
                    {"version": str(v), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
                    for v in shown]})

            def log_message(self, *args):  # keep test output quiet
                pass

        return Handler


@contextlib.contextmanager
def serving(models):
    """Context manager: a running `FakeServing` for `{model name: {version: path}}`."""
    server = FakeServing(models).start()
    try:
        yield server
    finally:
        server.stop()
