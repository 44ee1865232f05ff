"""A server for exported models that speaks TF Serving's REST API, and batches requests as TF Serving does.

`python -m alexnet_tf.serve PATH [--port 8501] [--model-name alexnet] [--host 127.0.0.1] [--batch-size 64] ...`

PATH is a SavedModel from `python -m alexnet_tf.export`, a TF Serving base path whose
numbered subfolders are versions (the highest is served), or a run folder of
`python -m alexnet_tf.train` (exported into a temporary folder first). Routes (`routes.ROUTES`):

  GET  /v1/models/NAME[/versions/N]            version status
  GET  /v1/models/NAME[/versions/N]/metadata   signatures (as `saved_model_cli show`)
  GET  /v1/models/NAME[/versions/N]/classes    the class names, index by index (not in TF Serving)
  POST /v1/models/NAME[/versions/N]:predict    {"instances": [...]} or {"inputs": ...}
  POST /v1/models/NAME[/versions/N]:classify   {"signature_name": "classification", "examples": [...]}
  POST /v1/models/NAME[/versions/N]:regress    (this model has no regression signature: 400)

Binary values travel as {"b64": "..."}, e.g.
  {"instances": [{"b64": "<base64 JPEG>"}]}                       -> {"predictions": [{...}]}
  {"inputs": {"images": [{"b64": "..."}, {"b64": "..."}]}}         -> {"outputs": {...}}
  {"signature_name": "serve_uint8", "instances": [<H x W x 3 ints>]}
  {"signature_name": "classification", "examples": [{"image/encoded": {"b64": "..."}}]}
                                                                   -> {"results": [[[label, score], ...]]}

Concurrent requests share model calls (`batching`): they wait in a queue bounded in
images and bytes, and beyond it get 503 with Retry-After. Every client mistake gets a
4xx and {"error": "..."}. The modules: `options` (`ServeOptions`: every option, which
makes the flags), `server` (the event loop, the connection limit), `connection` (a
connection's requests and the admission control: head, length, queue, turns, body),
`protocol` (HTTP/1.1's heads and answers), `routes` (a function per route, in a table),
`inputs` (a :predict request's JSON, checked against the limits), `examples` (:classify
and :regress), `images` (pixels read from image headers), `batching` (the queue),
`model` (the SavedModel), `session` (the SavedModel in a TensorFlow Session, as TF
Serving runs it), `threads` (model calls at once, TensorFlow's threads per op, by the
net's size), `command` (the command, `make_server`). docs/serving.md says
what the limits bound (peak memory, measured) and what they do not, and how the server
performs under load.
"""

import importlib

# name -> module: imported when first used, so that `python -m alexnet_tf.serve` filters
# TensorFlow's start-up lines (serve/__main__.py) before the server's modules load it.
_API = {
    "ROUTES": "routes",
    "Call": "routes",
    "route": "routes",
    "ImageTooLarge": "images",
    "image_pixels": "images",
    "RequestError": "inputs",
    "Servable": "model",
    "SessionModel": "session",
    "find_versions": "model",
    "ServeOptions": "options",
    "argument_parser": "command",
    "export_run": "command",
    "main": "command",
    "make_server": "command",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
