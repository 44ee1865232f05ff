"""Request batching as TF Serving does it: a bounded queue, and model calls on several requests at once.

Requests wait in one queue, bounded in images and in bytes of their inputs (counted from
the moment they are admitted until their answer is ready); a request that would go
beyond either bound is refused (`QueueFull`: the server answers 503 with Retry-After).
`threads` workers each take the oldest request and, with it, the later ones of the same
signature and input shapes, up to `batch_size` images, `max_pixels` pixels and
`max_call_bytes` bytes of inputs in all, counting those of the calls already running (the
calls at once then hold no more than one request may: a worker waits until they leave
room for the oldest request), waiting at most `wait` seconds from the oldest one's arrival for more to come; they call
the model once on the concatenation and split the outputs back, in order. Requests that
cannot share a call (other signature, other uint8 image size, a signature that is not
batch-major) go in a call of their own kind. If a merged call fails on a bad input, each
of its requests is run alone, so that only the bad one gets the error.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable

import numpy as np

from alexnet_tf.serve.inputs import Job, RequestError


class QueueFull(Exception):
    """The queue holds as many images or bytes as it may."""


@dataclasses.dataclass(eq=False)  # compared by identity
class _Pending:
    job: Job
    key: tuple  # requests with equal keys may share a model call
    arrived: float
    done: Callable[[_Pending], None]  # called once, in a worker thread, when outputs or error are set
    outputs: dict | None = None
    error: BaseException | None = None


class Batcher:
    """Runs `run(signature, inputs) -> outputs` on batches of the submitted jobs."""

    def __init__(
        self,
        run: Callable[[str, dict], dict],
        batchable: Callable[[str], bool] = lambda signature: True,
        batch_size: int = 64,
        max_pixels: int = 100_000_000,
        max_call_bytes: int = 16 * 2**20,
        wait: float = 0.0,
        threads: int = 1,
        max_images: int = 256,
        max_bytes: int = 16 * 2**20,
    ):
        self.run, self.batchable = run, batchable
        self.batch_size, self.max_pixels, self.max_call_bytes, self.wait = batch_size, max_pixels, max_call_bytes, wait
        self.max_images, self.max_bytes = max_images, max_bytes
        self._queue: collections.deque[_Pending] = collections.deque()
        self._images = self._bytes = 0  # of the jobs admitted and not yet answered
        self._calls = self._calling_pixels = self._calling_bytes = 0  # calls running now, their jobs' sums
        self._cond = threading.Condition()
        self._closed = False
        self._workers = [threading.Thread(target=self._work, name=f"batch-{i}", daemon=True) for i in range(threads)]
        for worker in self._workers:
            worker.start()

    def full(self) -> bool:
        """Whether the queue is at one of its bounds (a request can be refused before it is read)."""
        with self._cond:
            return self._images >= self.max_images or self._bytes >= self.max_bytes

    def waiting(self) -> int:
        """Requests queued and not yet taken into a model call."""
        with self._cond:
            return len(self._queue)

    def submit(self, job: Job) -> dict:
        """The outputs of `job` (rows of it alone), once its batch has run; raises what `put` raises."""
        finished = threading.Event()
        pending = self.put(job, lambda p: finished.set())
        finished.wait()
        if pending.error is not None:
            raise pending.error
        return pending.outputs

    def put(self, job: Job, done: Callable[[_Pending], None]) -> _Pending:
        """Queues `job` and returns at once; `done(pending)` is called from a worker thread
        once `pending.outputs` (rows of `job` alone) or `pending.error` is set. QueueFull beyond
        the bounds (a job larger than them alone is still taken when nothing else is queued)."""
        key = (job.signature, *(_shape_key(v) for _, v in sorted(job.inputs.items())))
        pending = _Pending(job, key if self.batchable(job.signature) else (object(),), time.monotonic(), done)
        with self._cond:
            over = self._images + job.size > self.max_images or self._bytes + job.nbytes > self.max_bytes
            if over and self._images:
                raise QueueFull(
                    f"busy: the queue holds {self._images} images and {self._bytes / 2**20:.1f} MiB "
                    f"(limits {self.max_images} and {self.max_bytes / 2**20:g} MiB)"
                )
            self._images += job.size
            self._bytes += job.nbytes
            self._queue.append(pending)
            self._cond.notify()  # one worker: every waiting one would take the same oldest request
        return pending

    def close(self) -> None:
        """Stops the workers once the queue is empty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._run_batch(batch)
            finally:
                with self._cond:
                    self._images -= sum(p.job.size for p in batch)
                    self._bytes -= sum(p.job.nbytes for p in batch)
                    self._calls -= 1
                    self._calling_pixels -= sum(p.job.pixels for p in batch)
                    self._calling_bytes -= sum(p.job.nbytes for p in batch)
                    if self._queue:  # a worker may be waiting for this call's room (none waits on an empty queue)
                        self._cond.notify_all()
                for p in batch:
                    p.done(p)

    def _next_batch(self) -> list[_Pending] | None:
        with self._cond:
            while True:
                while not self._queue:
                    if self._closed:
                        return None
                    self._cond.wait()
                first = self._queue[0]
                room = (self.max_pixels - self._calling_pixels, self.max_call_bytes - self._calling_bytes)
                if self._calls and (first.job.pixels > room[0] or first.job.nbytes > room[1]):
                    self._cond.wait()  # for the running calls to leave room (a lone request always fits)
                    continue
                batch = self._fitting(first, *room)
                left = first.arrived + self.wait - time.monotonic()
                if left <= 0 or sum(p.job.size for p in batch) >= self.batch_size:
                    break
                self._cond.wait(left)  # for more requests; another worker may take these meanwhile
            for p in batch:
                self._queue.remove(p)
            self._calls += 1
            self._calling_pixels += sum(p.job.pixels for p in batch)
            self._calling_bytes += sum(p.job.nbytes for p in batch)
            if self._queue:
                self._cond.notify()  # another worker may start on the rest
            return batch

    def _fitting(self, first: _Pending, max_pixels: int, max_bytes: int) -> list[_Pending]:
        """`first` and the later queued jobs of its key that fit with it (in `batch_size`
        images, `max_pixels` pixels and `max_bytes` bytes), in order."""
        batch, images, pixels, nbytes = [first], first.job.size, first.job.pixels, first.job.nbytes
        for p in self._queue:
            if p is first or p.key != first.key:
                continue
            job = p.job
            if (
                images + job.size > self.batch_size
                or pixels + job.pixels > max_pixels
                or nbytes + job.nbytes > max_bytes
            ):
                continue
            batch.append(p)
            images, pixels, nbytes = images + job.size, pixels + job.pixels, nbytes + job.nbytes
            if images == self.batch_size:
                break
        return batch

    def _run_batch(self, batch: list[_Pending]) -> None:
        if len(batch) == 1:
            self._run_alone(batch[0])
            return
        names = batch[0].job.inputs
        inputs = {k: _concatenate([p.job.inputs[k] for p in batch]) for k in names}
        try:
            outputs = self.run(batch[0].job.signature, inputs)
        except RequestError:  # a bad input among them: each alone, so that only its request fails
            for p in batch:
                self._run_alone(p)
            return
        except Exception as e:  # a fault of the server: every request of the call gets it
            for p in batch:
                p.error = e
            return
        start = 0
        for p in batch:
            p.outputs = {k: v[start : start + p.job.size] for k, v in outputs.items()}
            start += p.job.size

    def _run_alone(self, p: _Pending) -> None:
        try:
            p.outputs = self.run(p.job.signature, p.job.inputs)
        except Exception as e:
            p.error = e


def _shape_key(value) -> tuple:
    """What must be equal for two inputs to be concatenated: any bytes, or dtype and row shape."""
    return ("bytes",) if isinstance(value, list) else (value.dtype.str, value.shape[1:])


def _concatenate(values: list):
    if isinstance(values[0], list):
        return [item for value in values for item in value]
    return np.concatenate(values)
