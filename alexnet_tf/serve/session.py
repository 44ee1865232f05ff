"""A SavedModel run as TF Serving runs it: loaded into a TensorFlow Session (the
DirectSession that TF Serving's SavedModelBundle holds), each signature one callable of
its feeds and fetches. `SessionModel(path)(signature, {input name: array})` gives
{output name: array}.

`tf.saved_model.load` runs a signature through the eager runtime instead: Python binds
the arguments to the signature, the function's graph runs as one eager op, and its
executor hands the first ops to the inter-op thread pool and waits for the last. That
costs about 0.25 ms a call on a 2-core Xeon (a signature of a cast, a mean and a top-k:
0.27 ms), a quarter of the quickstart net's whole call; a Session's callable skips it.

With `inline`, each call's ops run on the thread that calls (RunOptions'
`inter_op_thread_pool = -1`, which TensorFlow documents for small graphs, where a handoff
to the pool costs as much as the ops; TF Serving does the same with
`--tensorflow_inter_op_parallelism=-1`). A large net gains from the pool instead, which
runs the two columns' convolutions side by side (`serve.threads` decides by the net's
size). With `parts` above 1, a call of several rows runs as that many calls of a share
of the rows each, at once, one on the calling thread and the others on threads of the
model's own: what a small net needs to use more than one core for one caller, whose ops
are too small to share (the server gets there by running several calls at once instead).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2


class SessionModel:
    """The SavedModel at `path` (tag "serve") in a Session of its own."""

    def __init__(self, path: str, inline: bool = False, parts: int = 1):
        graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=graph)
        with graph.as_default(), _without_deprecation_notes():
            self.meta_graph = tf.compat.v1.saved_model.loader.load(self.session, [tf.saved_model.SERVING], path)
        self.inline = inline
        # the signatures callers run: not the loader's own (__saved_model_init_op)
        self.signature_defs = {k: v for k, v in self.meta_graph.signature_def.items() if not k.startswith("__")}
        # {signature: {name: tf.TensorSpec}} of its inputs and of its outputs
        self.inputs = {k: _specs(d.inputs) for k, d in self.signature_defs.items()}
        self.outputs = {k: _specs(d.outputs) for k, d in self.signature_defs.items()}
        # one callable per signature, made here: the Session prunes and plans the graph of
        # its feeds and fetches once. `_make_callable_from_options` (tf.compat.v1.Session's,
        # as Keras 2 called it) keeps the run options in the callable; the public
        # `make_callable` goes through `Session.run`'s Python per call: 0.25 ms more a call,
        # measured on the quickstart net (0.94 against 0.69 ms).
        self._callables = {}
        for name, signature in self.signature_defs.items():
            feeds, fetches = sorted(signature.inputs), sorted(signature.outputs)
            options = config_pb2.CallableOptions(
                feed=[signature.inputs[k].name for k in feeds], fetch=[signature.outputs[k].name for k in fetches]
            )
            if inline:
                options.run_options.inter_op_thread_pool = -1
            self._callables[name] = (feeds, fetches, self.session._make_callable_from_options(options))
        # {signature: whether its every input and output has the batch first}: requests may
        # share a call along it, and a call's rows may be split
        self.batch_major = {
            k: all(s.shape.rank and s.shape[0] is None for s in [*self.inputs[k].values(), *self.outputs[k].values()])
            for k in self.signature_defs
        }
        self.parts = max(1, parts)
        self._helpers = (
            concurrent.futures.ThreadPoolExecutor(self.parts - 1, thread_name_prefix="session-part")
            if self.parts > 1
            else None
        )

    def __call__(self, signature: str, inputs: dict) -> dict:
        """{output name: array} of `signature` on `inputs` ({input name: array, or a list of
        bytes for a string input}); TensorFlow's errors (tf.errors.*) as they come."""
        feeds, fetches, call = self._callables[signature]
        values = [_feed(inputs[k]) for k in feeds]
        rows = {len(v) for v in values} if self.batch_major[signature] else set()
        parts = min(self.parts, *rows) if len(rows) == 1 else 1
        if parts <= 1:
            return dict(zip(fetches, call(*values)))
        bounds = [len(values[0]) * i // parts for i in range(parts + 1)]
        shares = [[v[a:b] for v in values] for a, b in zip(bounds, bounds[1:])]
        others = [self._helpers.submit(call, *share) for share in shares[1:]]
        results = [call(*shares[0])] + [f.result() for f in others]
        return {k: np.concatenate([r[i] for r in results]) for i, k in enumerate(fetches)}

    def close(self) -> None:
        if self._helpers is not None:
            self._helpers.shutdown()
        self.session.close()


def _specs(infos) -> dict:
    """{name: tf.TensorSpec} of a SignatureDef's TensorInfo map."""
    return {k: tf.TensorSpec(tf.TensorShape(v.tensor_shape), tf.as_dtype(v.dtype), name=k) for k, v in infos.items()}


def _feed(value):
    return np.array(value, dtype=object) if isinstance(value, list) else value


@contextlib.contextmanager
def _without_deprecation_notes():
    """The Session loader (tf.compat.v1's, which TF 2.21 keeps) logs that it is deprecated
    in favour of tf.saved_model.load: true for most callers, not the point here."""
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
