"""How the server spreads the model calls over the cores: how many calls run at once
(`--batch-threads`), how many threads TensorFlow gives each op (`--intra-op-threads`,
TF Serving's `--tensorflow_intra_op_parallelism`) and which threads run a call's ops
(`--inter-op-threads`, its `--tensorflow_inter_op_parallelism`: a pool of that many, or
-1 for the thread that calls). 0 for any of them: the plan below.

A small net's ops are too small to share: each op that TensorFlow splits over its
threads hands the parts to them and waits (tens of microseconds with two threads), which
a 76 px quickstart net pays about 20 times a call, and each call handed to the inter-op
pool pays it once more. There, each call runs on one thread, its own (`session`'s
`inline`), and as many calls run at once as there are cores. A large net's ops (conv1 of Fig. 2 on a
227 px image) gain from every core, and one call at a time uses them all (TensorFlow's
default). Measured with `python -m alexnet_tf.bench serve` on a 2-core Xeon, 32 clients,
both plans alternating: 5 M multiply-adds per image (the quickstart net) 1.29-1.37 times
the answers per second with calls on one thread each; 66 M (the paper's net at a quarter
width) 1.16 times; 208 M (half width) 1.05 times; 724 M (the paper's net) 0.88 times, and
0.67 times at one client. Hence the line at `SMALL_NET`. An export without the count
(written before it was recorded) gets the large net's plan, TensorFlow's defaults.

TensorFlow fixes its thread pools when it starts: `apply` must come before anything runs
a TensorFlow op in the process; after that it leaves the pools as they are and says so.
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf

# multiply-adds per image (all views) below which each model call runs on one thread
SMALL_NET = 100_000_000


@dataclasses.dataclass(frozen=True)
class ThreadPlan:
    batch_threads: int  # model calls at once
    intra_op: int  # TensorFlow threads per op; 0: TensorFlow's default (the cores)
    inter_op: int  # TensorFlow threads running independent ops; 0: its default (the cores); -1: none
    reason: str  # why, for the startup line

    @property
    def inline(self) -> bool:
        """Whether each call's ops run on the thread that calls, not in the inter-op pool."""
        return self.inter_op < 0

    def describe(self) -> str:
        """E.g. '2 model calls at once, 1 TensorFlow thread per op, each call on its own thread (a small net: ...)'."""
        calls = f"{self.batch_threads} model call{'s' * (self.batch_threads != 1)} at once"
        per_op = f"{self.intra_op} TensorFlow thread{'s' * (self.intra_op != 1)}" if self.intra_op else "all cores"
        own = ", each call on its own thread" if self.inline else ""
        return f"{calls}, {per_op} per op{own} ({self.reason})"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), as TensorFlow counts them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def plan_threads(
    multiply_adds: int | None, cores: int, batch_threads: int = 0, intra_op: int = 0, inter_op: int = 0
) -> ThreadPlan:
    """The plan for a net of `multiply_adds` per image (None: unknown) on `cores` cores;
    a number given (not 0) is kept as it is, the others follow the module's rule."""
    if multiply_adds is None:
        small, reason = False, "the export does not record its multiply-adds: TensorFlow's defaults"
    else:
        small = multiply_adds < SMALL_NET
        size = f"{multiply_adds / 1e6:,.0f} M multiply-adds per image"
        reason = f"a small net, {size}" if small else f"{size}"
    if batch_threads or intra_op or inter_op:
        reason = "as given" if batch_threads and intra_op and inter_op else f"{reason}; the rest as given"
    return ThreadPlan(
        batch_threads=batch_threads or (cores if small else 1),
        intra_op=intra_op or (1 if small else 0),
        inter_op=inter_op or (-1 if small else 0),
        reason=reason,
    )


def apply(plan: ThreadPlan) -> str | None:
    """Sets TensorFlow's thread pools to `plan`'s. Returns None, or why they stay as they
    are (TensorFlow already ran an op in this process)."""
    wanted = {"intra-op": plan.intra_op, "inter-op": max(plan.inter_op, 0)}  # -1: the Session's run option
    have = {
        "intra-op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter-op": tf.config.threading.get_inter_op_parallelism_threads(),
    }
    if wanted == have:
        return None
    try:
        tf.config.threading.set_intra_op_parallelism_threads(plan.intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(wanted["inter-op"])
    except RuntimeError:
        told = ", ".join(f"{k} {v or 'default'}" for k, v in have.items())
        return f"TensorFlow had already started in this process; its threads stay as they were ({told})"
    return None
