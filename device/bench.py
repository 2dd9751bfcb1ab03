"""Benchmarks that print figures (no pass/fail): the loop's cost, model latency, memory.

    waste-sorter bench [--model M] [--frames 300]

- per-frame cost of the exposure gate and of presence detection at 512x384;
- per-frame loop overhead on top of model inference (a rendered scene through ``Sorter.step``);
- model latency, batch 1, at 1 and 2 threads (median);
- peak RSS of a real ``waste-sorter run`` subprocess on a short scene.
Targets: loop overhead <= 5 ms per frame; peak RSS <= 300 MB with the int8 ResNet-34.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from device.classifier import Classifier
from device.config import Config
from device.demo_scene import SceneItem, Timing, make_board, render
from device.errors import UsageError
from device.gate import ExposureGate, GateThresholds
from device.presence import PresenceDetector, PresenceSettings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="ONNX model (default: the shipped one)")
    p.add_argument("--frames", type=int, default=300, help="frames per stage measurement")
    p.add_argument("--skip-rss", action="store_true", help="do not start a `run` subprocess")


def per_frame_ms(fn, frames: list[np.ndarray]) -> float:
    start = time.perf_counter()
    for i, frame in enumerate(frames):
        fn(frame, i / 10)
    return (time.perf_counter() - start) / len(frames) * 1000


def scene_frames(n: int) -> list[np.ndarray]:
    board = make_board()
    rng = np.random.default_rng(0)
    item = board.copy()
    cv2.rectangle(item, (170, 110), (340, 270), (120, 90, 60), -1)
    return [np.clip((item if (i // 20) % 2 else board) + rng.normal(0, 2, board.shape), 0, 255).astype(np.uint8)
            for i in range(n)]


def latency_ms(classifier: Classifier, runs: int = 20) -> float:
    """Median time of one batch-1 inference (after one warm-up run)."""
    x = np.zeros((1, 3, classifier.contract.input_height, classifier.contract.input_width), np.float32)
    classifier.logits(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        classifier.logits(x)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def loop_overhead_ms(model: Path | None, tmp: Path) -> tuple[float, int]:
    """Per-frame cost of Sorter.step on a rendered scene, minus the model's inference time."""
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from device.actuators import BinActuators
    from device.camera import open_camera
    from device.loop import Sorter
    from device.sortlog import SortLog

    board = make_board()
    items = []
    for colour in ((150, 60, 40), (60, 140, 60), (50, 60, 150)):
        look = board.copy()
        cv2.rectangle(look, (170, 110), (340, 270), colour, -1)
        items.append(SceneItem(look, "x"))
    render(items, tmp / "scene.mp4", board=board, timing=Timing(fps=10))
    config = Config()
    classifier = Classifier(model, threads=2)
    inference_s = 0.0
    original = classifier.probabilities

    def timed(images):
        nonlocal inference_s
        start = time.perf_counter()
        try:
            return original(images)
        finally:
            inference_s += time.perf_counter() - start

    classifier.probabilities = timed
    with open_camera(str(tmp / "scene.mp4")) as camera, \
            BinActuators(config.actuators, config.bins, pin_factory=MockFactory(pin_class=MockPWMPin)) as act, \
            SortLog(tmp / "sort.jsonl") as sortlog:
        sorter = Sorter(config, camera=camera, classifier=classifier, actuators=act, sortlog=sortlog)
        frames = []
        while (frame := camera.capture()) is not None:
            frames.append(frame)
        start = time.perf_counter()
        for frame in frames:
            sorter.step(frame.image, frame.timestamp_s)
        total_s = time.perf_counter() - start
    return (total_s - inference_s) / len(frames) * 1000, sorter.summary.items


# The child reports its own high-water mark (VmHWM is per address space, so unlike
# getrusage(RUSAGE_CHILDREN) it does not include the moment the child was a fork of this process).
_RUN_AND_REPORT_HWM = """
import sys
from device.cli import main
code = main(sys.argv[1:])
print("VmHWM_kB", next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")), file=sys.stderr)
sys.exit(code)
"""


def run_peak_rss_mb(model: Path | None, tmp: Path) -> float:
    """Peak resident memory of a `waste-sorter run` child on the bench scene (MiB)."""
    cmd = [sys.executable, "-c", _RUN_AND_REPORT_HWM, "run", "--source", str(tmp / "scene.mp4"), "--log",
           str(tmp / "rss.jsonl")] + (["--model", str(model)] if model else [])
    env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock")
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    line = next(l for l in done.stderr.splitlines() if l.startswith("VmHWM_kB"))
    return int(line.split()[1]) / 1024


def main(args) -> int:
    if args.frames < 1:
        raise UsageError(f"--frames {args.frames}: must be at least 1")
    frames = scene_frames(args.frames)
    gate = ExposureGate(GateThresholds())
    presence = PresenceDetector(PresenceSettings(), reference=make_board())
    print(f"frames 512x384, {args.frames} per stage, {os.cpu_count()} CPUs")
    print(f"  gate:      {per_frame_ms(lambda f, t: gate.check(f), frames):6.2f} ms/frame")
    print(f"  presence:  {per_frame_ms(presence.update, frames):6.2f} ms/frame")
    with tempfile.TemporaryDirectory() as tmp:
        overhead, items = loop_overhead_ms(args.model, Path(tmp))
        print(f"  loop overhead beyond inference: {overhead:6.2f} ms/frame ({items} items; target <= 5 ms)")
        for threads in (1, 2):
            latency = latency_ms(Classifier(args.model, threads=threads))
            print(f"  model latency, {threads} thread(s): {latency:7.1f} ms (batch 1)")
        if not args.skip_rss:
            print(f"  peak RSS of `run`: {run_peak_rss_mb(args.model, Path(tmp)):6.1f} MiB (target <= 300 MB)")
    return 0
