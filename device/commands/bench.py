"""Benchmarks that print figures (no pass/fail): the loop's cost, decision and actuator timing, model
latency, memory, and an estimate for a Raspberry Pi.

    waste-sorter bench [--model M] [--frames 300] [--skip-rss] [--quick] [--json]

Every time is reported as a median and 95th percentile of the individual events, never a total
divided by a count:

- gate and presence per 512x384 frame;
- ``Sorter.step`` wall time per frame in a paced live run (a rendered scene played by a
  ``PacedCamera``, ``clock=time.monotonic``: the model on its worker thread, so a step never
  includes inference; see :mod:`device.commands.bench_loop`) — target median <= 5 ms;
- decision latency of that run's sort records (deciding frame processed -> actuated), next to
  one single-frame inference (preprocessing + model) — target p95 <= that inference + 10 ms;
- how late each hold ended in that run, from gpiozero's mock pin history, while the model
  runs — target <= 20 ms;
- SIGTERM to this process while an inference runs and an actuator is active, until every pin
  is safe (a few runs, a fresh sorter each) — target <= 20 ms;
- model latency at 1, 2 and 4 threads, batch 1 and 3, of the model and its fp32 twin
  (:mod:`device.commands.bench_model`; the twin needs the ``onnx`` package) — target int8 >= 2.5x faster
  than fp32 at 1 thread;
- an ESTIMATE for a Raspberry Pi 4 and 5: the model's multiply-accumulates times ms per GMAC
  from published ncnn figures (not a measurement);
- peak RSS of a real ``waste-sorter run`` child — target <= 250 MB.

``--json`` prints one JSON object (keys carry their unit: ``_ms``, ``_mb``, ``_x``) instead of
text; ``--quick`` measures fewer frames, items and repetitions (for tests).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from device.commands.bench_loop import HOLD_MS, TIMING, InferenceProbe, bench_config, paced_run, render_scene, signal_trials
from device.commands.bench_model import (BATCHES, THREADS, TWIN_SKIPPED, count_macs, model_latency, pi_estimates,
                                single_frame_ms, write_twin)
from device.commands.bench_stats import spread
from device.classifier import DEFAULT_MODEL, Classifier, available_cores
from device.commands.demo_scene import make_board
from device.errors import UsageError
from device.gate import ExposureGate, GateThresholds
from device.presence import PresenceDetector, PresenceSettings

log = logging.getLogger(__name__)

TARGETS = {"loop_step_ms_median": 5.0, "hold_end_late_ms_max": 20.0, "signal_to_safe_ms_max": 20.0,
           "int8_speedup_1thread_x": 2.5, "run_peak_rss_mb": 250.0}
DECISION_MARGIN_MS = 10.0  # decision latency p95 <= one single-frame inference + this


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="ONNX model (default: the shipped one)")
    p.add_argument("--frames", type=int, default=300, help="frames for the gate and presence figures")
    p.add_argument("--skip-rss", action="store_true", help="do not start a `run` subprocess")
    p.add_argument("--quick", action="store_true", help="fewer frames, items and repetitions (for tests)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def scene_frames(n: int) -> list[np.ndarray]:
    board = make_board()
    rng = np.random.default_rng(0)
    item = board.copy()
    cv2.rectangle(item, (170, 110), (340, 270), (120, 90, 60), -1)
    return [np.clip((item if (i // 20) % 2 else board) + rng.normal(0, 2, board.shape), 0, 255).astype(np.uint8)
            for i in range(n)]


def stage_figures(frames: list[np.ndarray], fps: float = 10.0) -> dict[str, float]:
    """Gate and presence, timed separately on each frame as the loop calls them
    (:func:`device.item_frames.observe`: presence's view, the gate, presence's update)."""
    gate = ExposureGate(GateThresholds())
    presence = PresenceDetector(PresenceSettings(), reference=make_board())
    gate_ms, presence_ms = [], []
    for i, frame in enumerate(frames):
        t0 = time.perf_counter()
        view = presence.view(frame)
        t1 = time.perf_counter()
        verdict = gate.check(frame, item_mask=view.changed)
        t2 = time.perf_counter()
        presence.update(view, i / fps, verdict.reason)
        t3 = time.perf_counter()
        gate_ms.append((t2 - t1) * 1000)
        presence_ms.append((t1 - t0 + t3 - t2) * 1000)
    return {"stage_frames": len(frames), **spread("gate_ms", gate_ms), **spread("presence_ms", presence_ms)}


# The child reports its own high-water mark (VmHWM is per address space, so unlike
# getrusage(RUSAGE_CHILDREN) it does not include the moment the child was a fork of this process).
_RUN_AND_REPORT_HWM = """
import sys
from device.cli import main
code = main(sys.argv[1:])
print("VmHWM_kB", next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")), file=sys.stderr)
sys.exit(code)
"""


def run_peak_rss_mb(model: Path | None, video: Path, tmp: Path) -> float:
    """Peak resident memory of a `waste-sorter run` child on the bench scene (MB, 10^6 bytes)."""
    cmd = [sys.executable, "-c", _RUN_AND_REPORT_HWM, "run", "--source", str(video), "--log",
           str(tmp / "rss.jsonl")] + (["--model", str(model)] if model else [])
    env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock")
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    line = next(l for l in done.stderr.splitlines() if l.startswith("VmHWM_kB"))
    return int(line.split()[1]) * 1024 / 1e6


def measure(args) -> tuple[dict, list[str]]:
    quick = args.quick
    repeats, items, trials = (3, 2, 1) if quick else (20, 6, 5)
    frames = min(args.frames, 30) if quick else args.frames
    model = args.model or DEFAULT_MODEL
    figures: dict = {"model": model.name, "cpus": os.cpu_count() or 0, "available_cores": available_cores(),
                     "quick": quick, **stage_figures(scene_frames(frames))}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        tmp = Path(folder)
        config = bench_config(args.model)
        video = render_scene(tmp / "scene.mp4", items)
        classifier = Classifier(args.model, threads=config.model.threads)
        figures["run_threads"] = classifier.threads
        figures.update(spread("single_frame_inference_ms", single_frame_ms(classifier, max(repeats, 5))))
        probe = InferenceProbe(classifier)
        figures.update(paced_run(classifier, probe, config, video, items, tmp))
        figures["decision_latency_target_ms"] = figures["single_frame_inference_ms_median"] + DECISION_MARGIN_MS
        figures.update(signal_trials(classifier, probe, config, video, tmp, trials))
        classifier.close()
        figures.update(model_latency(args.model, "int8", repeats))
        twin = write_twin(model, tmp)
        if twin is None:
            notes.append(TWIN_SKIPPED)
        else:
            figures.update(model_latency(twin, "fp32", repeats))
            figures["int8_speedup_1thread_x"] = (figures["model_fp32_1thread_batch1_ms_median"]
                                                 / figures["model_int8_1thread_batch1_ms_median"])
        macs, how = count_macs(model, (classifier.contract.input_height, classifier.contract.input_width))
        figures.update(pi_estimates(macs))
        notes.append(f"MACs: {how}")
        if not args.skip_rss:
            figures["run_peak_rss_mb"] = run_peak_rss_mb(args.model, video, tmp)
    return figures, notes


def main(args) -> int:
    if args.frames < 1:
        raise UsageError(f"--frames {args.frames}: must be at least 1")
    device_log = logging.getLogger("device")
    level = device_log.level
    if not getattr(args, "verbose", False):
        device_log.setLevel(logging.WARNING)  # the sorter's per-item lines would drown the figures
    try:
        figures, notes = measure(args)
    finally:
        device_log.setLevel(level)
    if args.json:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in figures.items()}
        print(json.dumps({**clean, "targets": {**TARGETS, "decision_latency_ms_p95": "decision_latency_target_ms"},
                          "notes": notes}, sort_keys=True))
    else:
        print(format_text(figures, notes))
    return 0


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _hold_line(f: dict) -> str:
    """The hold-end lateness line; "not measured" when no hold ran to its end (a loaded machine
    can drop enough frames that the recording ends while the last hold is still on)."""
    cut = f"{f['hold_ends_cut_short']} cut short by the end of the run"
    if not f["hold_ends"]:
        return f"  hold end lateness       not measured: no hold of {HOLD_MS:g} ms ran to its end ({cut})"
    return (f"  hold end lateness       median {f['hold_end_late_ms_median']:6.2f}  p95 {f['hold_end_late_ms_p95']:6.2f}  "
            f"max {f['hold_end_late_ms_max']:6.2f} ms ({f['hold_ends']} holds of {HOLD_MS:g} ms, "
            f"{f['hold_ends_during_inference']} ended during an inference"
            f"{', ' + cut if f['hold_ends_cut_short'] else ''})"
            f"   target <= 20 ms: {_verdict(f['hold_end_late_ms_max'] <= 20.0)}")


def _signal_line(f: dict) -> str:
    """The SIGTERM line; "not measured" when no run gave a moment with an actuator on and an
    inference running (a starved machine can miss it)."""
    if not f["signal_trials"]:
        return "SIGTERM -> every pin safe: not measured (no run had an actuator on during an inference)"
    return (f"SIGTERM -> every pin safe: median {f['signal_to_safe_ms_median']:.2f}  max {f['signal_to_safe_ms_max']:.2f} ms "
            f"({f['signal_trials']} run(s), {f['signal_trials_during_inference']} sent during an inference)"
            f"   target <= 20 ms: {_verdict(f['signal_to_safe_ms_max'] <= 20.0)}")


def format_text(f: dict, notes: list[str]) -> str:
    lines = [f"waste-sorter bench: {f['cpus']} CPUs ({f['available_cores']} available), model {f['model']}"
             f"{', quick' if f['quick'] else ''}",
             f"per 512x384 frame ({f['stage_frames']} frames):",
             f"  gate       median {f['gate_ms_median']:6.2f} ms   p95 {f['gate_ms_p95']:6.2f} ms",
             f"  presence   median {f['presence_ms_median']:6.2f} ms   p95 {f['presence_ms_p95']:6.2f} ms",
             f"paced live run: {f['loop_items']} items at {TIMING.fps:g} fps, {f['loop_frames']} frames "
             f"({f['loop_frames_dropped']} dropped), the model on its worker thread ({f['run_threads']} threads)",
             f"  Sorter.step per frame   median {f['loop_step_ms_median']:6.2f}  p95 {f['loop_step_ms_p95']:6.2f}  "
             f"max {f['loop_step_ms_max']:6.2f} ms   target median <= 5 ms: "
             f"{_verdict(f['loop_step_ms_median'] <= 5.0)}",
             f"  decision latency        p50 {f['decision_latency_ms_p50']:6.2f}  p95 {f['decision_latency_ms_p95']:6.2f}  "
             f"max {f['decision_latency_ms_max']:6.2f} ms (deciding frame -> actuated)",
             f"      target p95 <= one single-frame inference ({f['single_frame_inference_ms_median']:.2f} ms median, "
             f"p95 {f['single_frame_inference_ms_p95']:.2f}) + {DECISION_MARGIN_MS:g} ms = "
             f"{f['decision_latency_target_ms']:.2f} ms: "
             f"{_verdict(f['decision_latency_ms_p95'] <= f['decision_latency_target_ms'])}",
             f"      inference jobs in the run: median {f['inference_in_run_ms_median']:.2f}  "
             f"p95 {f['inference_in_run_ms_p95']:.2f} ms",
             _hold_line(f),
             _signal_line(f),
             "model alone on a preprocessed batch, median / p95 ms:",
             "                 " + "".join(f"{t} thread{'s' if t > 1 else ' '}        " for t in THREADS)]
    for name in ("int8", "fp32"):
        for batch in BATCHES:
            key = f"model_{name}_{{t}}thread_batch{batch}_ms"
            if key.format(t=1) + "_median" not in f:
                continue
            cells = "".join(f"{f[key.format(t=t) + '_median']:7.2f} / {f[key.format(t=t) + '_p95']:<7.2f} "
                            for t in THREADS)
            lines.append(f"  {name} batch {batch}    {cells}")
    if "int8_speedup_1thread_x" in f:
        ratio = f["int8_speedup_1thread_x"]
        lines.append(f"  int8 vs fp32 twin, 1 thread, batch 1: {ratio:.2f}x faster   target >= 2.5x: {_verdict(ratio >= 2.5)}")
    lines += [f"Raspberry Pi ESTIMATE (not a measurement): {f['model_gmac']:.2f} GMAC per frame x ms/GMAC "
              f"from ncnn figures (issue 16: 288x216 ResNet-34, Pi 4 4 threads ~215 ms, Pi 5 ~45 ms)",
              f"  Pi 4: ~{f['pi4_estimate_ms']:.0f} ms ({f['pi4_ms_per_gmac']:.1f} ms/GMAC); ncnn's own Pi 4 table "
              f"(benchmark/README.md, resnet50) would give ~{f['pi4_estimate_ncnn_table_ms']:.0f} ms",
              f"  Pi 5: ~{f['pi5_estimate_ms']:.0f} ms ({f['pi5_ms_per_gmac']:.1f} ms/GMAC)"]
    if "run_peak_rss_mb" in f:
        rss = f["run_peak_rss_mb"]
        lines.append(f"peak RSS of `waste-sorter run`: {rss:.1f} MB   target <= 250 MB: {_verdict(rss <= 250.0)}")
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)
