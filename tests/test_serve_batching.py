"""The serving queue (alexnet_tf.serve.batching) with a stand-in for the model: which
requests share a call, that each gets its own rows back, and the bounds."""

import threading
import time

import numpy as np
import pytest

from alexnet_tf.serve.batching import Batcher, QueueFull
from alexnet_tf.serve.inputs import Job, RequestError


def image_job(pixels: np.ndarray, signature: str = "serve_uint8") -> Job:
    return Job(signature, {"images": pixels}, len(pixels), pixels.nbytes, pixels.size // 3, rows=True)


def bytes_job(items: list, signature: str = "serving_default") -> Job:
    return Job(signature, {"images": items}, len(items), sum(map(len, items)), 100 * len(items), rows=True)


def row_answers(x) -> np.ndarray:
    """A row's answer: the sum of a uint8 image, or the length of a byte string."""
    if isinstance(x, list):
        return np.array([len(b) for b in x])
    return x.reshape(len(x), -1).sum(axis=1, dtype=np.int64)


class Model:
    """Answers per row (`row_answers`) and records each call; holds every call until
    `release` is set."""

    def __init__(self):
        self.calls, self.entered, self.release = [], threading.Event(), threading.Event()

    def __call__(self, signature: str, inputs: dict) -> dict:
        self.entered.set()
        self.release.wait(30)
        x = inputs["images"]
        self.calls.append((signature, len(x)))
        if isinstance(x, list) and b"bad" in x:
            raise RequestError(400, "could not process the input")
        return {"n": row_answers(x)}


class Overlap:
    """`model` counting its calls at once: `active` now, `most` at any time."""

    def __init__(self, model):
        self.model, self.active, self.most, self.lock = model, 0, 0, threading.Lock()

    def __call__(self, signature: str, inputs: dict) -> dict:
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            return self.model(signature, inputs)
        finally:
            with self.lock:
                self.active -= 1


def submit_all(batcher: Batcher, jobs: list, model: Model) -> list:
    """Submits `jobs` one after the other, each from its own thread: the first is taken into
    a model call that is held until all the others wait in the queue. Returns each job's
    outputs or error, in the order of `jobs`."""
    results = [None] * len(jobs)

    def submit(i):
        try:
            results[i] = batcher.submit(jobs[i])
        except Exception as e:
            results[i] = e

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(jobs))]
    for i, thread in enumerate(threads):
        thread.start()
        deadline = time.monotonic() + 30
        while not (model.entered.is_set() and batcher.waiting() == i) and time.monotonic() < deadline:
            time.sleep(0.001)
    model.release.set()
    for thread in threads:
        thread.join(30)
    return results


def test_queued_requests_share_a_call_and_get_their_own_rows():
    model = Model()
    batcher = Batcher(model, batch_size=64)
    rng = np.random.default_rng(0)
    jobs = [image_job(rng.integers(0, 256, (n, 4, 5, 3), dtype=np.uint8)) for n in (1, 3, 1, 2, 4)]
    results = submit_all(batcher, jobs, model)
    batcher.close()
    assert model.calls == [("serve_uint8", 1), ("serve_uint8", 10)]  # the four queued ones together
    for job, out in zip(jobs, results):
        np.testing.assert_array_equal(out["n"], [int(image.sum()) for image in job.inputs["images"]])


def test_only_requests_of_one_signature_and_shape_share_a_call():
    model = Model()
    batcher = Batcher(model)
    small, large = np.ones((1, 4, 5, 3), np.uint8), np.ones((1, 6, 5, 3), np.uint8)
    jobs = [
        bytes_job([b"a"]),  # taken first, held
        image_job(small),
        bytes_job([b"bb", b"ccc"]),  # byte strings of any length go together
        image_job(large),
        image_job(small * 2),
        bytes_job([b"dddd"], signature="other"),
        bytes_job([b"eeeee"]),
    ]
    results = submit_all(batcher, jobs, model)
    batcher.close()
    # The oldest waiting request leads each call, and takes the later ones it can share with.
    assert model.calls == [
        ("serving_default", 1),
        ("serve_uint8", 2),
        ("serving_default", 3),
        ("serve_uint8", 1),
        ("other", 1),
    ]
    assert [list(r["n"]) for r in results] == [[1], [60], [2, 3], [90], [120], [4], [5]]


@pytest.mark.parametrize(
    "max_pixels, max_call_bytes, calls",
    [
        (10**8, 10**6, [1, 4, 4]),  # 4 images: 2 + 2, then 1 + 3
        (250, 10**6, [1, 2, 2, 1, 3]),  # no two fit together; one over the limit still runs, alone
        (10**8, 3, [1, 3, 2, 3]),  # 2 + 1 bytes, then 2, then 3
    ],
)
def test_a_call_holds_at_most_batch_size_images_max_pixels_and_bytes(max_pixels, max_call_bytes, calls):
    model = Model()
    batcher = Batcher(model, batch_size=4, max_pixels=max_pixels, max_call_bytes=max_call_bytes)
    jobs = [bytes_job([b"x"])] + [bytes_job([b"y"] * n) for n in (2, 2, 1, 3)]  # 100 pixels, 1 byte an image
    submit_all(batcher, jobs, model)
    batcher.close()
    assert [n for _, n in model.calls] == calls


def test_a_bad_input_fails_its_own_request_only():
    model = Model()
    batcher = Batcher(model)
    jobs = [bytes_job([b"a"]), bytes_job([b"bb"]), bytes_job([b"bad"]), bytes_job([b"cccc"])]
    results = submit_all(batcher, jobs, model)
    batcher.close()
    assert isinstance(results[2], RequestError) and results[2].status == 400
    assert [list(results[i]["n"]) for i in (0, 1, 3)] == [[1], [2], [4]]
    assert [n for _, n in model.calls] == [1, 3, 1, 1, 1]  # the shared call failed: each alone


def test_the_queue_is_bounded_in_images_and_bytes():
    model = Model()
    batcher = Batcher(model, max_images=3, max_bytes=1000)
    results = []
    holder = threading.Thread(target=lambda: results.append(batcher.submit(bytes_job([b"a", b"b"]))))
    holder.start()
    assert model.entered.wait(30)
    with pytest.raises(QueueFull):
        batcher.submit(bytes_job([b"c", b"d"]))  # 4 images
    with pytest.raises(QueueFull):
        batcher.submit(bytes_job([b"x" * 999]))  # 1001 bytes
    model.release.set()
    holder.join(30)
    assert list(results[0]["n"]) == [1, 1]
    # Alone, a request larger than the bounds is still taken: it could never be otherwise.
    assert list(batcher.submit(bytes_job([b"e"] * 5))["n"]) == [1] * 5
    assert not batcher.full()
    batcher.close()


def test_a_call_waits_for_more_requests_until_full_or_timed_out():
    model = Model()
    model.release.set()
    batcher = Batcher(model, batch_size=2, wait=30.0)
    start = time.monotonic()
    threads = [threading.Thread(target=batcher.submit, args=(bytes_job([b"a"]),)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert model.calls == [("serving_default", 2)] and time.monotonic() - start < 20  # full: no wait
    batcher.close()
    batcher = Batcher(model, batch_size=8, wait=0.2)
    start = time.monotonic()
    assert list(batcher.submit(bytes_job([b"abc"]))["n"]) == [3]
    assert time.monotonic() - start >= 0.2  # waited for company, then ran alone
    batcher.close()


@pytest.mark.parametrize("share, together", [(0.3, True), (0.6, False)])
def test_calls_at_once_hold_at_most_max_pixels_together(share, together):
    """Two workers: two requests of 30% of max_pixels each run at once; of 60% each, the
    second waits for the first call to end though a worker is free (the memory of the
    calls at once stays that of one)."""
    release = threading.Event()
    model = Overlap(lambda signature, inputs: release.wait(30) and {"n": np.zeros(len(inputs["images"]))})
    batcher = Batcher(model, batch_size=1, max_pixels=1000, threads=2)
    pixels = int(share * 1000)
    jobs = [Job("serving_default", {"images": [b"x"]}, 1, 1, pixels, rows=True) for _ in range(2)]
    threads = [threading.Thread(target=batcher.submit, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and model.active + batcher.waiting() < 2:
        time.sleep(0.001)
    time.sleep(0.2)  # time for a free worker to take the second request, if it may
    assert (model.active, batcher.waiting()) == ((2, 0) if together else (1, 1))
    release.set()
    for thread in threads:
        thread.join(30)
    batcher.close()
    assert model.most == (2 if together else 1) and batcher.waiting() == 0


@pytest.mark.parametrize("wait", [0.0, 0.002])
def test_many_submitters_all_get_their_own_rows(wait):
    """Three workers, requests of two signatures and three shapes from 24 threads at once:
    every request gets its own rows (nothing lost, no worker left asleep while requests
    wait), and calls run side by side."""
    model = Overlap(lambda signature, inputs: time.sleep(0.001) or {"n": row_answers(inputs["images"])})
    batcher = Batcher(model, batch_size=8, wait=wait, threads=3)
    rng = np.random.default_rng(0)
    jobs = [
        bytes_job([b"x" * int(n) for n in rng.integers(1, 50, rng.integers(1, 4))])
        if i % 3 == 0
        else image_job(rng.integers(0, 256, (int(rng.integers(1, 4)), 2 + i % 3, 2, 3), dtype=np.uint8))
        for i in range(240)
    ]
    results = [None] * len(jobs)

    def submit(first):
        for i in range(first, len(jobs), 24):
            results[i] = batcher.submit(jobs[i])["n"]

    threads = [threading.Thread(target=submit, args=(t,)) for t in range(24)]
    for thread in threads:
        thread.daemon = True
        thread.start()
    deadline = time.monotonic() + 30
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    assert not any(thread.is_alive() for thread in threads), "requests left waiting"
    for job, got in zip(jobs, results):
        np.testing.assert_array_equal(got, row_answers(job.inputs["images"]))
    assert model.most > 1 and batcher.waiting() == 0
    batcher.close()
