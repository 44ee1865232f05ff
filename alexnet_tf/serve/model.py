"""The served SavedModel: its version, signatures and metadata, and one call of a signature on a batch."""

from __future__ import annotations

import json
import os
import re

import tensorflow as tf
from google.protobuf import json_format

from alexnet_tf.exporting import CLASSES_FILE, apply_export_settings
from alexnet_tf.serve.inputs import RequestError
from alexnet_tf.serve.session import SessionModel


def find_versions(export_dir: str) -> dict:
    """{version: SavedModel folder}: EXPORT_DIR itself is version 1, or its numbered subfolders."""
    if os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
        return {1: export_dir}
    versions = {}
    if os.path.isdir(export_dir):
        for name in os.listdir(export_dir):
            if name.isdigit() and os.path.isfile(os.path.join(export_dir, name, "saved_model.pb")):
                versions[int(name)] = os.path.join(export_dir, name)
    if not versions:
        raise FileNotFoundError(
            f"{export_dir!r} holds no SavedModel (saved_model.pb) nor numbered version folders; "
            "make one with `python -m alexnet_tf.export --workdir RUN --out EXPORT_DIR/1` "
            "(or serve a run folder: one with config.json and checkpoints/)"
        )
    return versions


class Servable:
    """The highest version under EXPORT_DIR, loaded; answers status and metadata, and runs signatures."""

    def __init__(self, export_dir: str, model_name: str = "alexnet", inline: bool = False):
        self.model_name = model_name
        versions = find_versions(export_dir)
        self.version = max(versions)
        self.path = versions[self.version]
        self.settings = apply_export_settings(self.path)
        # as TF Serving runs it: in a Session, each call's ops on its own thread with `inline`
        self.session = SessionModel(self.path, inline=inline)
        if "serving_default" not in self.session.signature_defs:
            raise ValueError(f"{self.path} has no serving_default signature")
        # {signature: {input name: TensorSpec}}, {signature: {output name: TensorSpec}}
        self.inputs, self.outputs = self.session.inputs, self.session.outputs
        self.batchable = self.session.batch_major
        # every SignatureDef, the loader's own too, as TF Serving's metadata lists them
        self._signature_defs = {
            k: json_format.MessageToDict(v, preserving_proto_field_name=True)
            for k, v in self.session.meta_graph.signature_def.items()
        }
        self._classes = _read_json(os.path.join(self.path, CLASSES_FILE))

    def check_model(self, name: str, version: str | None, label: str | None = None) -> None:
        """Raises 404 unless NAME (and VERSION, if given) is the model served. TF Serving's
        version labels (/labels/LABEL) come from its model config: none is set here."""
        if name != self.model_name:
            raise RequestError(404, f"Servable not found for request: Latest({name})")
        if version is not None and version != str(self.version):
            raise RequestError(404, f"Servable not found for request: Specific({name}, {version})")
        if label is not None:
            raise RequestError(404, f"Unrecognized servable version label: {label}")

    def classes(self) -> dict:
        """The answer to GET /v1/models/NAME/classes: the export's class names (CLASSES_FILE)."""
        if self._classes is None:
            raise RequestError(
                404, f"this export has no {CLASSES_FILE}; export it again with `python -m alexnet_tf.export`"
            )
        return self._classes

    def status(self) -> dict:
        """The answer to GET /v1/models/NAME."""
        return {
            "model_version_status": [
                {
                    "version": str(self.version),
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        }

    def metadata(self) -> dict:
        """The answer to GET /v1/models/NAME/metadata."""
        return {
            "model_spec": {"name": self.model_name, "signature_name": "", "version": str(self.version)},
            "metadata": {"signature_def": {"signature_def": self._signature_defs}},
        }

    def run(self, signature: str, inputs: dict) -> dict:
        """{output name: array} of `signature` on `inputs` ({name: list of bytes or array});
        RequestError (400, 413) for inputs the model cannot process."""
        try:
            return self.session(signature, inputs)
        except tf.errors.InvalidArgumentError as e:
            raise RequestError(400, f"could not process the input: {_first_line(e.message)}") from None
        except tf.errors.ResourceExhaustedError as e:
            raise RequestError(413, f"input too large to process: {_first_line(e.message)}") from None


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def _first_line(text: str) -> str:
    """The line of a TensorFlow error that says what went wrong: not the Session's
    "Graph execution error:" heading, nor the eager runtime's {{function_node ...}} prefix."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and line.strip() != "Graph execution error:"]
    return re.sub(r"^(\{\{function_node [^}]*\}\}\s*)+", "", lines[0]) if lines else "invalid input"
