"""`waste-sorter bench --quick --json --skip-rss` on the tiny colour model: every figure is there,
finite and positive. The values are the bench's to print (speed targets are printed figures,
never timed assertions here)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from helpers import colour_contract, colour_model
from device.commands import bench, bench_model
from device.actuators import BinActuators
from device.commands.bench_loop import PinWatch, bench_config
from device.classifier import DEFAULT_MODEL
from export.package import save_model

ROOT = Path(__file__).resolve().parents[1]

PER_FRAME = ["gate_ms", "presence_ms", "single_frame_inference_ms", "inference_in_run_ms"]
WITH_MAX = ["loop_step_ms", "hold_end_late_ms"]
MODEL = [f"model_{name}_{t}thread_batch{b}_ms" for name in ("int8", "fp32") for t in (1, 2, 4) for b in (1, 3)]
FIGURES = ([f"{k}_{s}" for k in PER_FRAME + WITH_MAX + MODEL for s in ("median", "p95")]
           + [f"{k}_max" for k in WITH_MAX]
           + ["decision_latency_ms_p50", "decision_latency_ms_p95", "decision_latency_ms_max",
              "decision_latency_target_ms", "signal_to_safe_ms_median", "signal_to_safe_ms_max",
              "int8_speedup_1thread_x", "model_gmac", "pi4_ms_per_gmac", "pi5_ms_per_gmac", "pi4_estimate_ms",
              "pi5_estimate_ms", "pi4_estimate_ncnn_table_ms"])
COUNTS = ["stage_frames", "loop_frames", "loop_items", "hold_ends", "signal_trials", "run_threads", "cpus"]
UNMEASURED_WHEN_NONE_COUNTED = {"hold_end_late_ms": "hold_ends", "signal_to_safe_ms": "signal_trials"}
MAY_BE_ZERO = ["loop_frames_dropped", "hold_ends_cut_short", "hold_ends_during_inference",
               "signal_trials_during_inference"]


@pytest.fixture(scope="module")
def quick_json(tmp_path_factory) -> dict:
    model = tmp_path_factory.mktemp("model") / "colour.onnx"
    save_model(colour_model(), model, colour_contract())
    done = subprocess.run([sys.executable, "-m", "device.cli", "bench", "--quick", "--json", "--skip-rss",
                           "--model", str(model)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_figure_is_present_finite_and_positive(quick_json):
    missing = [k for k in FIGURES + COUNTS + MAY_BE_ZERO if k not in quick_json]
    assert not missing
    # A starved machine (CI beside a training run) drops frames: the recording can end while the
    # only hold is on (cut short), and no run may have an actuator on during an inference. Then
    # the count is 0 and those figures are None ("not measured"), never a made-up number.
    unmeasured = set()
    for prefix, count in UNMEASURED_WHEN_NONE_COUNTED.items():
        if quick_json[count] == 0:
            figures = [k for k in FIGURES if k.startswith(prefix)]
            assert all(quick_json[k] is None for k in figures), prefix
            unmeasured |= {count, *figures}
    if "hold_ends" in unmeasured:
        assert quick_json["hold_ends_cut_short"] > 0  # an actuator did move
    for key in FIGURES + COUNTS:
        if key in unmeasured:
            continue
        value = quick_json[key]
        assert isinstance(value, (int, float)) and math.isfinite(value), (key, value)
        if key.startswith("hold_end_late_ms"):
            # a hold is timed from the clock read just before the actuator moves, so a return
            # exactly on time can read a few microseconds early against the pin's own record
            assert value > -1.0, (key, value)
        else:
            assert value > 0, (key, value)
    for key in MAY_BE_ZERO:
        assert isinstance(quick_json[key], int) and quick_json[key] >= 0, key
    assert quick_json["notes"] and set(quick_json["targets"]) >= {"loop_step_ms_median", "signal_to_safe_ms_max"}


def test_figures_nothing_was_counted_for_are_reported_as_not_measured(quick_json):
    starved = {**quick_json, "hold_ends": 0, "hold_ends_cut_short": 1, "signal_trials": 0,
               **{k: None for k in FIGURES if k.startswith(tuple(UNMEASURED_WHEN_NONE_COUNTED))}}
    lines = bench.format_text(starved, starved["notes"]).splitlines()
    hold = next(line for line in lines if "hold end lateness" in line)
    sigterm = next(line for line in lines if line.startswith("SIGTERM"))
    assert "not measured" in hold and "1 cut short" in hold and "MISSED" not in hold
    assert "not measured" in sigterm and "MISSED" not in sigterm


def test_the_text_report_shows_every_section(quick_json):
    text = bench.format_text(quick_json, quick_json["notes"])
    for words in ("gate", "presence", "Sorter.step", "decision latency", "hold end lateness",
                  "SIGTERM -> every pin safe", "fp32 batch 3", "int8 vs fp32 twin", "ESTIMATE", "Pi 5"):
        assert words in text


def test_the_shipped_resnet34_has_about_4_6_gmac_at_288x216():
    macs, how = bench_model.count_macs(DEFAULT_MODEL, (216, 288))
    # 3.6 GMAC at 224x224, scaled to 288x216, plus the classifier head
    assert 4.4e9 < macs < 4.8e9 and "ONNX graph" in how


def test_without_onnx_the_twin_is_skipped_and_macs_are_estimated(monkeypatch, tmp_path, colour_model_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError, as on a Pi
    assert bench_model.write_twin(colour_model_path, tmp_path) is None
    macs, how = bench_model.count_macs(colour_model_path, (216, 288))
    assert macs == pytest.approx(bench_model.RESNET34_GMAC_224 * 1e9 * 216 * 288 / 224 ** 2)
    assert "onnx missing" in how


def test_pin_watch_sees_a_hold_from_leaving_safe_to_coming_back():
    config = bench_config(None)
    factory = MockFactory(pin_class=MockPWMPin)
    with BinActuators(config.actuators, config.bins, pin_factory=factory) as actuators:
        watch = PinWatch(factory)
        assert watch.all_safe_s(watch.cleared_s) is None
        actuators.actuate("paper", 0.0)
        moved_at = watch.timeline(0)[-1][0]
        assert math.isinf(watch.all_safe_s(moved_at))  # still out: no return yet
        actuators.update(10.0)
        (moved, back), = watch.holds()
        assert moved == moved_at and back > moved
        assert watch.all_safe_s(moved) == back
