"""TF Serving's Classify and Regress APIs: a request's "examples" -> serialized tf.train.Example; outputs -> "results".

As TF Serving's REST API turns them (tensorflow_serving/util/json_tensor.cc), in
{"signature_name": S, "context": {FEATURE: V}, "examples": [{FEATURE: V}, ...]} each example
becomes a tf.train.Example with the context's features and its own; V is a value or a
list of values of one kind: a string or {"b64": ...} (bytes_list), a whole number or a
boolean (int64_list), a decimal number (float_list). The signature (serving_default
unless named, as in TF Serving) must be one TF Serving classifies with: one input "inputs"
(the serialized examples) and the outputs "classes" (strings) and/or "scores" (floats),
(B, N) each; for :regress one output "outputs" (floats, (B,) or (B, 1)). The answers:
{"results": [[[label, score], ...], ...]} and {"results": [value, ...]}, the key TF Serving
writes ("result" in its REST documentation is a misprint: tensorflow/serving#3652).

Every bytes value is checked as an image (its header, the pixel limits) before anything
is decoded, as the string inputs of :predict are.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2, feature_pb2

from alexnet_tf.serve.inputs import InputLimits, Job, RequestError, b64_bytes, image_size, request_pixels_message

INT64 = (-(2**63), 2**63 - 1)
FLOAT32_MAX = float(np.finfo(np.float32).max)
WANTED = {  # TF Serving's outputs of a classification and a regression signature, by name
    "classify": {"classes": tf.string, "scores": tf.float32},
    "regress": {"outputs": tf.float32},
}


def make_job(request, servable, limits: InputLimits, kind: str) -> Job:
    """The Job of a parsed :classify or :regress (`kind`) request: the serialized examples."""
    if not isinstance(request, dict):
        raise RequestError(400, "the request body must be a JSON object with 'examples'")
    name = request.get("signature_name", "serving_default")
    if not isinstance(name, str):
        raise RequestError(400, f"signature_name must be a string, got {type(name).__name__}")
    if name not in servable.inputs:
        raise RequestError(400, f"unknown signature_name {name!r}; this model has {', '.join(sorted(servable.inputs))}")
    _check_signature(servable, name, kind)
    examples = request.get("examples")
    if not isinstance(examples, list) or not examples:
        raise RequestError(400, f"the request must have 'examples', a non-empty list, for :{kind}")
    if len(examples) > limits.max_batch:
        raise RequestError(413, f"examples: batch of {len(examples)} exceeds the limit of {limits.max_batch}")
    context, context_pixels = {}, 0
    if "context" in request:
        context, context_pixels = _features(request["context"], "context", limits)
    serialized, pixels = [], 0
    for i, example in enumerate(examples):
        features, n = _features(example, f"examples[{i}]", limits)
        pixels += n + context_pixels  # the context's images are decoded with every example
        if pixels > limits.max_request_pixels:
            raise RequestError(413, request_pixels_message(pixels, limits))
        proto = example_pb2.Example(features=feature_pb2.Features(feature={**context, **features}))
        serialized.append(proto.SerializeToString())
    return Job(name, {"inputs": serialized}, len(serialized), sum(map(len, serialized)), pixels, rows=True)


def classification_answer(outputs: dict) -> dict:
    """{"results": [[[label, score], ...] per example]} of a classification signature's outputs."""
    classes, scores = outputs.get("classes"), outputs.get("scores")
    shape = (classes if classes is not None else scores).shape
    if classes is None:
        classes = np.full(shape, b"", dtype=object)
    if scores is None:
        scores = np.zeros(shape, np.float32)
    return {
        "results": [
            [[label.decode("utf-8", "replace"), score] for label, score in zip(labels, row)]
            for labels, row in zip(classes.tolist(), scores)
        ]
    }


def regression_answer(outputs: dict) -> dict:
    """{"results": [value per example]} of a regression signature's outputs."""
    return {"results": outputs["outputs"].reshape(-1)}


def _check_signature(servable, name: str, kind: str) -> None:
    if _fits(servable, name, kind):
        return
    others = [k for k in sorted(servable.inputs) if _fits(servable, k, kind)]
    use = f'; use "signature_name": "{others[0]}"' if others else f"; this model has none for :{kind}"
    outputs = " and/or ".join(WANTED[kind])
    raise RequestError(
        400,
        f"signature {name!r} is no {kind} signature (one input 'inputs', serialized tf.train.Example; "
        f"outputs {outputs}){use}",
    )


def _fits(servable, name: str, kind: str) -> bool:
    """Whether signature `name` is one TF Serving runs for :classify or :regress (`kind`)."""
    inputs, outputs, wanted = servable.inputs[name], servable.outputs[name], WANTED[kind]
    return (
        set(inputs) == {"inputs"}
        and inputs["inputs"].dtype.name == "string"
        and isinstance(outputs, dict)
        and bool(outputs)
        and all(k in wanted and getattr(v, "dtype", None) == wanted[k] for k, v in outputs.items())
    )


def _features(obj, path: str, limits: InputLimits) -> tuple[dict, int]:
    """({name: tf.train.Feature}, pixels of its images) of an example's JSON object."""
    if not isinstance(obj, dict):
        raise RequestError(400, f"{path}: an example must be a JSON object, got {type(obj).__name__}")
    features, pixels = {}, 0
    for name, content in obj.items():
        kinds, values = set(), []
        for j, value in enumerate(content if isinstance(content, list) else [content]):
            where = f"{path}[{name!r}]" + (f"[{j}]" if isinstance(content, list) else "")
            kind, value = _value(value, where)
            if kind == "bytes":
                pixels += image_size(value, where, limits)
                if pixels > limits.max_request_pixels:
                    raise RequestError(413, request_pixels_message(pixels, limits))
            kinds.add(kind)
            values.append(value)
        if len(kinds) > 1:
            raise RequestError(400, f"{path}[{name!r}]: values of one kind only (bytes, int64 or float)")
        features[name] = _feature(kinds.pop() if kinds else None, values)
    return features, pixels


def _value(value, where: str) -> tuple[str, object]:
    if isinstance(value, bool):
        return "int64", int(value)
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise RequestError(400, f"{where}: {value} is out of int64's range")
        return "int64", value
    if isinstance(value, float):
        if abs(value) > FLOAT32_MAX:
            raise RequestError(400, f"{where}: {value} cannot be a float32 without loss")
        return "float", value
    if isinstance(value, (str, dict)):
        return "bytes", b64_bytes(value, where)
    raise RequestError(400, f"{where}: unexpected JSON type {type(value).__name__} in a feature")


def _feature(kind: str | None, values: list) -> feature_pb2.Feature:
    if kind == "bytes":
        return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=values))
    if kind == "int64":
        return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=values))
    if kind == "float":
        return feature_pb2.Feature(float_list=feature_pb2.FloatList(value=values))
    return feature_pb2.Feature()  # an empty list
