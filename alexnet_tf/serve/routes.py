"""The REST routes: one function each, registered in `ROUTES` by method and URL tail.

Every URL is /v1/models/NAME[/versions/N | /labels/LABEL]TAIL, as in TF Serving; TAIL is
"" (status), "/metadata", "/classes" or ":VERB". A route is added by writing its function
and registering it with `@route(method, tail, about)`:

- a GET route, `fn(call) -> dict`, answers at once;
- a POST route, `async fn(call, request) -> dict`, gets the parsed JSON body once the
  server has admitted, received and parsed it (`server`: the bounds), and awaits
  `call.run(job)` for the model's outputs (shared with other requests' by `batching`).

The dict is the 200 answer; `RequestError` is a 4xx (or 503) answer with {"error": ...}.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from alexnet_tf.serve import examples
from alexnet_tf.serve.inputs import InputLimits, Job, RequestError, answer, make_job
from alexnet_tf.serve.model import Servable

URL = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/[a-z]+|:[A-Za-z]+)?/?$"
)


@dataclasses.dataclass(frozen=True)
class Route:
    method: str  # GET (answered at once) or POST (a JSON body, admitted and read first)
    tail: str
    fn: Callable
    about: str  # for the docs and the 404 answer


ROUTES: dict[tuple[str, str], Route] = {}


def route(method: str, tail: str, about: str) -> Callable:
    """Registers the decorated function as the route for `method` on URLs ending in `tail`."""

    def register(fn: Callable) -> Callable:
        if (method, tail) in ROUTES:
            raise ValueError(f"{method} {tail!r} is already a route")
        ROUTES[(method, tail)] = Route(method, tail, fn, about)
        return fn

    return register


class Call:
    """What a route sees of the server: the model, the input limits, and `run`."""

    __slots__ = ("servable", "limits", "run")

    def __init__(self, servable: Servable, limits: InputLimits, run: Callable):
        self.servable, self.limits = servable, limits
        self.run = run  # async run(job) -> {output name: array of job.size rows}


def resolve(method: str, path: str, servable: Servable) -> Route:
    """The route for `method` and `path` (query string included); 404 for an unknown model,
    version, label or route, 405 for a route of the other method."""
    m = URL.match(path.split("?", 1)[0])
    if not m:
        raise RequestError(404, f"no route {path}; routes: {usage(servable.model_name)}")
    servable.check_model(m["name"], m["version"], m["label"])
    tail = m["tail"] or ""
    found = ROUTES.get((method, tail))
    if found is None:
        other = [r.method for (_, t), r in ROUTES.items() if t == tail]
        if other:
            raise RequestError(405, f"{tail or 'the status'} needs {other[0]}, not {method}")
        raise RequestError(404, f"no route {tail} for {method}; routes: {usage(servable.model_name)}")
    return found


def usage(name: str) -> str:
    """The routes, one per method and tail, for the answer to an unknown URL."""
    return "; ".join(f"{r.method} /v1/models/{name}{r.tail}" for r in ROUTES.values())


@route("GET", "", "version status")
def status(call: Call) -> dict:
    return call.servable.status()


@route("GET", "/metadata", "signatures, as `saved_model_cli show` lists them")
def metadata(call: Call) -> dict:
    return call.servable.metadata()


@route("GET", "/classes", "the class names (and descriptions), index by index")
def classes(call: Call) -> dict:
    return call.servable.classes()


@route("POST", ":predict", '{"instances": [...]} (rows) or {"inputs": ...} (columns)')
async def predict(call: Call, request) -> dict:
    job = make_job(request, call.servable.inputs, call.limits)
    del request  # only the job's inputs stay while it waits
    return answer(job, await call.run(job))


@route("POST", ":classify", '{"signature_name": "classification", "examples": [{FEATURE: VALUE}, ...]}')
async def classify(call: Call, request) -> dict:
    job = examples.make_job(request, call.servable, call.limits, "classify")
    del request
    return examples.classification_answer(await call.run(job))


@route("POST", ":regress", '{"signature_name": ..., "examples": [...]} of a regression signature')
async def regress(call: Call, request) -> dict:
    job: Job = examples.make_job(request, call.servable, call.limits, "regress")
    del request
    return examples.regression_answer(await call.run(job))
