"""Exposure search on the simulated camera: convergence, unreachable scenes, applied controls."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.exposure import ExposureLimits, apply_and_settle, search_exposure, white_balance_gains
from device.camera.sim import SimScene, SimulatedCamera, parse_sim_source
from device.calibration_file.schema import ExposureTarget
from device.camera import ExposureControls, Frame
from device.errors import CalibrationError, CameraError
from device.gate import measure

SIZE = (128, 96)
TARGET = ExposureTarget()
LIMITS = ExposureLimits()


def test_sim_exposure_changes_image_with_delay():
    cam = SimulatedCamera(SimScene(delay=4), size=SIZE, controls=ExposureControls(2000, 1.0, (1.0, 1.0)))
    dark = cam.capture()
    cam.set_controls(ExposureControls(8000, 2.0, (1.0, 1.0)))
    frames = [cam.capture() for _ in range(6)]
    assert [f.metadata["ExposureTime"] for f in frames] == [2000] * 4 + [8000] * 2  # 4 frames late
    assert [f.metadata["AnalogueGain"] for f in frames] == [1.0] * 4 + [2.0] * 2
    assert measure(frames[3].image).median_luma == pytest.approx(measure(dark.image).median_luma, abs=2)
    assert measure(frames[4].image).saturated_frac > 0.5  # 8x the light clips
    again = SimulatedCamera(SimScene(delay=4), size=SIZE, controls=ExposureControls(2000, 1.0, (1.0, 1.0)))
    assert np.array_equal(again.capture().image, dark.image)  # seeded


@pytest.mark.parametrize("start_us, gain", [(150, 1.0), (1500, 1.0), (200_000, 8.0), (30_000, 4.0)])
@pytest.mark.parametrize("seed", [0, 7])
def test_converges_from_dark_and_bright_starts(start_us, gain, seed):
    cam = SimulatedCamera(SimScene(seed=seed, delay=3 + seed % 3), size=SIZE)
    steps = []
    result = search_exposure(cam, ExposureControls(start_us, gain, (1.0, 1.0)), TARGET, LIMITS, on_step=steps.append)
    assert abs(result.stats.median_luma - TARGET.median_luma) <= TARGET.tolerance
    assert result.stats.saturated_frac < TARGET.max_saturated_frac
    assert len(result.steps) == len(steps) <= 8
    # what is reported is what the camera applied (read back from metadata)
    assert result.controls == cam.applied
    red, blue = result.controls.colour_gains
    assert 0.75 < red < 0.95 and 1.3 < blue < 1.55  # white balance for the warm simulated light
    # and a fresh frame with those controls is still on target
    assert abs(measure(cam.capture().image).median_luma - TARGET.median_luma) <= TARGET.tolerance


def test_bright_light_converges_with_short_exposure():
    cam = SimulatedCamera(SimScene(light=20), size=SIZE)
    result = search_exposure(cam, ExposureControls(20_000, 1.0, (1.0, 1.0)), TARGET, LIMITS)
    assert result.controls.exposure_us < 1000


def test_dim_light_uses_gain_after_longest_exposure():
    cam = SimulatedCamera(SimScene(light=0.15), size=SIZE)
    result = search_exposure(cam, ExposureControls(1000, 1.0, (1.0, 1.0)), TARGET, LIMITS)
    assert result.controls.exposure_us == pytest.approx(LIMITS.max_exposure_us, abs=40)
    assert result.controls.analogue_gain > 1.5


@pytest.mark.parametrize("scene, message", [
    (SimScene(light=0.01), "scene too dark"),
    (SimScene(light=2000), "scene too bright"),
    (SimScene(glare=0.03), "target unreachable"),
])
def test_unreachable_scene_fails_clearly(scene, message):
    cam = SimulatedCamera(scene, size=SIZE)
    with pytest.raises(CalibrationError, match=message) as info:
        search_exposure(cam, ExposureControls(5000, 1.0, (1.0, 1.0)), TARGET, LIMITS)
    assert "\n" not in str(info.value)


def test_step_limit():
    cam = SimulatedCamera(SimScene(), size=SIZE)
    with pytest.raises(CalibrationError, match="did not converge in 2 steps"):
        search_exposure(cam, ExposureControls(100, 1.0, (1.0, 1.0)), TARGET, ExposureLimits(max_steps=2))


class StuckCamera:
    """Ignores new controls, like a camera whose controls never apply."""

    def __init__(self):
        self.index = 0

    def set_controls(self, controls):
        pass

    def capture(self):
        self.index += 1
        return Frame(np.full((24, 32, 3), 100, np.uint8), self.index / 30, self.index,
                     {"ExposureTime": 1000, "AnalogueGain": 1.0, "ColourGains": (1.0, 1.0)})


def test_controls_that_never_apply():
    with pytest.raises(CalibrationError, match="did not apply ExposureTime=9000 .* within 5 frames"):
        apply_and_settle(StuckCamera(), ExposureControls(9000, 1.0, (1.0, 1.0)), 5)


def test_white_balance_neutralises_tint():
    cam = SimulatedCamera(SimScene(tint=1.4), size=SIZE, controls=ExposureControls(6000, 1.0, (1.0, 1.0)))
    frame = cam.capture()
    gains = white_balance_gains(frame.image, (1.0, 1.0))
    cam.set_controls(ExposureControls(6000, 1.0, gains))
    for _ in range(4):
        frame = cam.capture()
    r, g, b = frame.image.reshape(-1, 3).astype(float).mean(axis=0)
    assert abs(r - g) < 4 and abs(b - g) < 4


def test_sim_source_strings():
    assert parse_sim_source("sim") == SimScene()
    assert parse_sim_source("sim:light=0.5,seed=3") == SimScene(light=0.5, seed=3)
    for bad in ("sim:colour=1", "sim:light=abc", "sim:light=nan", "sim:light=-1"):
        with pytest.raises(CameraError):
            parse_sim_source(bad)
