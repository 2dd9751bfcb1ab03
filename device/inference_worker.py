"""Inference off the loop: one job at a time on one worker thread, so the loop keeps reading frames.

The loop :meth:`~InferenceWorker.submit`\\ s a job (a few frames, a tag saying what they are for
and, optionally, a ``then`` to run on the result) when the worker is :attr:`~InferenceWorker.idle`,
and :meth:`~InferenceWorker.poll`\\ s for the finished one with every frame. onnxruntime releases
the GIL while it runs, so gate, presence, actuator timing and signal handling go on meanwhile.
``then`` runs on the worker thread as soon as the result is there (the loop uses it to route and
actuate without waiting for the next frame); what it returns comes back with the result.

``threaded=False`` runs each job inside :meth:`submit`: a recorded scene (source time stands
still between frames) then sorts identically at any speed, with the same code path.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from device.classifier import Classifier
from device.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceResult:
    tag: Any  # what the loop submitted the frames for
    probabilities: np.ndarray | None  # frames x classes; None when the model failed
    error: ModelError | None
    inference_ms: float  # preprocessing + model
    then_result: Any = None  # what ``then`` returned
    then_error: BaseException | None = None  # what ``then`` raised (the loop re-raises it)


@dataclass(frozen=True)
class _Job:
    images: tuple[np.ndarray, ...]
    tag: Any
    then: Callable[[InferenceResult], Any] | None


class InferenceWorker:
    """Runs ``classifier.probabilities`` for one job at a time (see the module docstring)."""

    def __init__(self, classifier: Classifier, *, threaded: bool = True):
        self.classifier = classifier
        self.threaded = threaded
        self._cond = threading.Condition()
        self._job: _Job | None = None  # submitted, not yet taken back by poll()
        self._result: InferenceResult | None = None
        self._closed = False
        self._thread = None
        if threaded:
            self._thread = threading.Thread(target=self._serve, name="inference", daemon=True)
            self._thread.start()

    @property
    def idle(self) -> bool:
        """True when a job may be submitted: none is running and the last result was polled."""
        with self._cond:
            return self._job is None and self._result is None

    def submit(self, images: list[np.ndarray], tag: Any,
               then: Callable[[InferenceResult], Any] | None = None) -> None:
        """Start classifying ``images`` (RGB uint8). Only when :attr:`idle`."""
        job = _Job(tuple(images), tag, then)
        with self._cond:
            if self._closed:
                raise RuntimeError("inference worker is closed")
            if self._job is not None or self._result is not None:
                raise RuntimeError("inference worker is busy")
            self._job = job
            if self.threaded:
                self._cond.notify_all()
                return
        result = self._run(job)  # inline: done before submit returns
        with self._cond:
            self._result = result

    def poll(self) -> InferenceResult | None:
        """The finished job's result, once; None while it runs or when there is none."""
        with self._cond:
            return self._take()

    def wait(self, timeout_s: float | None = None) -> InferenceResult | None:
        """The finished job's result, waiting up to ``timeout_s`` for it (None: as long as it takes)."""
        with self._cond:
            self._wait_done(timeout_s)
            return self._take()

    def wait_done(self, timeout_s: float | None = None) -> bool:
        """Wait up to ``timeout_s`` until the job in progress is done (``then`` included), leaving
        its result for :meth:`poll`; False if it is still running."""
        with self._cond:
            return self._wait_done(timeout_s)

    def _wait_done(self, timeout_s: float | None) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._result is None and self._job is not None:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._cond.wait(remaining)
        return True

    def _take(self) -> InferenceResult | None:
        result, self._result = self._result, None
        if result is not None:
            self._job = None
        return result

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._job is None or self._result is not None):
                    self._cond.wait()
                if self._closed:
                    return
                job = self._job
            result = self._run(job)
            with self._cond:
                self._result = result
                self._cond.notify_all()

    def _run(self, job: _Job) -> InferenceResult:
        started = time.perf_counter()
        probabilities, error = None, None
        try:
            probabilities = self.classifier.probabilities(list(job.images))
        except ModelError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - preprocessing's cv2/numpy errors: the thread must live on
            log.exception("inference crashed")
            error = ModelError(f"{self.classifier.path}: inference crashed ({type(exc).__name__}: {exc})")
        result = InferenceResult(job.tag, probabilities, error, (time.perf_counter() - started) * 1000)
        if job.then is None:
            return result
        try:
            return _with_then(result, job.then(result), None)
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, which re-raises it
            return _with_then(result, None, exc)

    def close(self) -> None:
        """Stop the thread after the job in progress (onnxruntime cannot be interrupted)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10.0)

    def __enter__(self) -> "InferenceWorker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _with_then(result: InferenceResult, value: Any, error: BaseException | None) -> InferenceResult:
    return InferenceResult(result.tag, result.probabilities, result.error, result.inference_ms, value, error)
