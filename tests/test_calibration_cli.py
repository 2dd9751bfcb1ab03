"""`waste-sorter calibrate` end to end: sim camera, recorded video, --check, --rollback, reload."""

from __future__ import annotations

import stat
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.calibration_file import store
from calibration.reload import confirm_reload, reload_sorter
from device.runtime_status import RuntimeStatus, read_runtime_status, write_runtime_status
from device.camera.sim import SimScene, SimulatedCamera
from device.camera import ExposureControls
from device.cli import main as waste_sorter
from device.gate import ExposureGate

SMALL = ["--width", "128", "--height", "96", "--frames", "5", "--yes"]


def calibrate(out: Path, *extra: str) -> int:
    return waste_sorter(["calibrate", "--out", str(out), *SMALL, *extra])


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def sim_calibration(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cal") / "calibration.json"
    assert calibrate(out, "--source", "sim", "--exposure-us", "300", "--no-reload") == 0
    return out


def test_help_documents_the_steps(capsys):
    with pytest.raises(SystemExit) as info:
        waste_sorter(["calibrate", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out.lower()
    for words in ("clear the board", "exposure search", "colourgains", "board reference", "gate thresholds",
                  "histogram", "scp", "reload", "--check", "--rollback", "--no-reload", "sim", "9-15"):
        assert words in text, words


def test_sim_end_to_end(sim_calibration, capsys):
    folder = sim_calibration.parent
    cal = store.load_calibration(sim_calibration)
    assert _files(folder) == sorted(["calibration.json", cal.board_reference, cal.histogram_name])
    assert cal.exposure_searched and cal.source == "sim" and cal.image_size == (128, 96) and cal.frames == 5
    assert abs(cal.board.median_luma - 190) <= 8 and cal.board.saturated_frac < 0.005
    board = store.load_board_image(sim_calibration, cal)
    assert board.shape == (96, 128, 3)
    assert (folder / cal.histogram_name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cal.gate.max_level_rise < 255 - cal.board.median_luma


# light=1.8: level and saturation drift (about half the board clipped); a board clipped whole
# (light=2.5) has lost its colour too: 15
@pytest.mark.parametrize("source, code", [
    ("sim", 0), ("sim:seed=4", 0), ("sim:light=0.6", 9), ("sim:tint=1.3", 12), ("sim:light=1.8", 11),
])
def test_check_exit_codes(sim_calibration, source, code, capsys):
    assert waste_sorter(["calibrate", "--check", "--out", str(sim_calibration), "--source", source, *SMALL]) == code
    out = capsys.readouterr().out
    assert out.startswith("DRIFT" if code else "OK")


def test_check_without_calibration(tmp_path, capsys):
    assert waste_sorter(["calibrate", "--check", "--out", str(tmp_path / "none.json"), "--source", "sim"]) == 80
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("source, message", [("sim:light=0.005", "scene too dark"), ("sim:glare=0.03", "unreachable")])
def test_unreachable_scene_writes_nothing(tmp_path, capsys, source, message):
    out = tmp_path / "cal" / "calibration.json"
    assert calibrate(out, "--source", source, "--no-reload") == 80
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.parent.exists() or _files(out.parent) == []


def test_recalibrate_and_rollback(tmp_path, capsys):
    out = tmp_path / "calibration.json"
    assert calibrate(out, "--source", "sim", "--no-reload") == 0
    first = store.load_calibration(out)
    assert calibrate(out, "--source", "sim:light=0.5", "--no-reload") == 0
    second = store.load_calibration(out)
    assert second.id != first.id and second.exposure_us > first.exposure_us
    assert [p.name for p in store.history(out)] == [f"0001-{first.id}.json"]
    assert waste_sorter(["calibrate", "--rollback", "--out", str(out), "--no-reload"]) == 0
    assert store.load_calibration(out) == first
    assert waste_sorter(["calibrate", "--rollback", "--out", str(out), "--no-reload"]) == 80
    assert waste_sorter(["calibrate", "--history", "--out", str(out)]) == 0
    assert first.id in capsys.readouterr().out


def _write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_calibration_from_recorded_video(tmp_path, capsys):
    controls = ExposureControls(10_000, 1.0, (0.85, 1.42))
    cam = SimulatedCamera(SimScene(seed=3), size=(128, 96), controls=controls)
    video = _write_video(tmp_path / "empty-board.mp4", [cam.capture().image for _ in range(8)])
    out = tmp_path / "cal" / "calibration.json"
    assert calibrate(out, "--source", str(video), "--exposure-us", "10000", "--gain", "1.0",
                     "--colour-gains", "0.85", "1.42", "--no-reload") == 0
    assert "not possible" in capsys.readouterr().out
    cal = store.load_calibration(out)
    assert not cal.exposure_searched and cal.controls == controls
    assert abs(cal.board.median_luma - 190) <= 10
    gate = ExposureGate(cal.gate, cal.board)
    normal = cam.capture().image
    assert gate.check(normal).accepted
    with_item = normal.copy()
    with_item[30:70, 40:90] = (60, 120, 40)  # a green item on the board
    assert gate.check(with_item).accepted
    assert gate.check(np.full_like(normal, 255)).reason == "overexposed"
    cam.set_controls(ExposureControls(40_000, 1.0, controls.colour_gains))
    bright = [cam.capture() for _ in range(5)][-1]
    assert bright.metadata["ExposureTime"] == 40_000
    assert gate.check(bright.image).reason == "overexposed"


def _fake_systemctl(tmp_path: Path, monkeypatch, active: bool, reload_rc: int = 0) -> Path:
    bin_dir, log = tmp_path / "bin", tmp_path / "systemctl.log"
    bin_dir.mkdir()
    script = bin_dir / "systemctl"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n"
                      f"case \"$1\" in is-active) exit {0 if active else 3};; reload) echo denied >&2; "
                      f"exit {reload_rc};; esac\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir))
    return log


def test_reload_active_unit(tmp_path, monkeypatch):
    log = _fake_systemctl(tmp_path, monkeypatch, active=True)
    out = tmp_path / "calibration.json"
    assert calibrate(out, "--source", "sim", "--status-file", str(tmp_path / "status.json"),
                     "--reload-wait-s", "0") == 0
    assert log.read_text().splitlines() == ["is-active --quiet waste-sorter.service", "reload waste-sorter.service"]


def test_the_sorter_is_said_to_use_the_calibration_only_once_its_status_names_it(tmp_path, monkeypatch, capsys):
    """systemctl reload only sends a SIGHUP: the sorter may not have taken it up (the board not
    empty yet) or may have refused it; calibrate says it is in use only when the status says so."""
    _fake_systemctl(tmp_path, monkeypatch, active=True)
    status_file = tmp_path / "status.json"
    write_runtime_status(status_file, RuntimeStatus(updated_utc="2025-01-01T12:00:00Z",
                                                    started_utc="2025-01-01T11:00:00Z", calibration_id="cal-old"))
    out = tmp_path / "calibration.json"
    assert calibrate(out, "--source", "sim", "--status-file", str(status_file), "--reload-wait-s", "0") == 0
    text = capsys.readouterr().out
    new_id = store.load_calibration(out).id
    assert "now uses" not in text
    assert f"the sorter has not taken calibration {new_id} up within 0 s (it still uses cal-old)" in text

    write_runtime_status(status_file, replace(read_runtime_status(status_file), calibration_id=new_id))
    assert calibrate(out, "--source", "sim", "--no-reload") == 0  # a newer one; roll back to new_id
    capsys.readouterr()
    assert waste_sorter(["calibrate", "--rollback", "--out", str(out), "--status-file", str(status_file),
                         "--reload-wait-s", "0"]) == 0
    assert f"the sorter now uses calibration {new_id}" in capsys.readouterr().out


def test_confirm_reload_waits_for_the_status_file(tmp_path):
    status_file = tmp_path / "status.json"
    clock = iter(range(100)).__next__  # one second a look

    def sorter_takes_it_up(_s):  # the sorter rewrites its status file while calibrate waits
        write_runtime_status(status_file, RuntimeStatus(updated_utc="2025-01-01T12:00:02Z",
                                                        started_utc="2025-01-01T11:00:00Z", calibration_id="cal-9"))

    assert confirm_reload(status_file, "cal-9", wait_s=5, clock=clock, sleep=sorter_takes_it_up) == \
        (True, "the sorter now uses calibration cal-9")
    assert confirm_reload(tmp_path / "none.json", "cal-9", wait_s=2, clock=iter(range(100)).__next__,
                          sleep=lambda s: None)[1].startswith(
        f"the sorter has not taken calibration cal-9 up within 2 s (no status file at {tmp_path / 'none.json'})")


def test_a_rolled_back_version_stays_in_the_history_and_can_be_restored(tmp_path, capsys):
    out = tmp_path / "calibration.json"
    assert calibrate(out, "--source", "sim", "--no-reload") == 0
    first = store.load_calibration(out)
    assert calibrate(out, "--source", "sim:light=0.5", "--no-reload") == 0
    second = store.load_calibration(out)
    capsys.readouterr()
    assert waste_sorter(["calibrate", "--rollback", "--out", str(out), "--no-reload"]) == 0
    assert f"(calibrate --restore {second.id} goes back)" in capsys.readouterr().out
    assert waste_sorter(["calibrate", "--history", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"active       {first.id}")
    assert lines[1].startswith(f"rolled back  {second.id}")  # the newer one is not lost
    assert waste_sorter(["calibrate", "--restore", second.id, "--out", str(out), "--no-reload"]) == 0
    assert store.load_calibration(out) == second
    assert [p.name for p in store.history(out)] == [f"0001-{first.id}.json"]  # --rollback goes back again
    assert waste_sorter(["calibrate", "--rollback", "--out", str(out), "--no-reload"]) == 0
    assert store.load_calibration(out) == first
    assert waste_sorter(["calibrate", "--restore", "nope", "--out", str(out), "--no-reload"]) == 80
    assert "no kept calibration 'nope' (see calibrate --history)" in capsys.readouterr().err


def test_reload_skipped_when_inactive_or_missing(tmp_path, monkeypatch):
    log = _fake_systemctl(tmp_path, monkeypatch, active=False)
    assert reload_sorter() == (False, "waste-sorter.service is not running; it will load the calibration when started")
    assert log.read_text().splitlines() == ["is-active --quiet waste-sorter.service"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    reloaded, hint = reload_sorter()
    assert not reloaded and "no systemctl" in hint


def test_reload_failure_gives_the_command(tmp_path, monkeypatch):
    _fake_systemctl(tmp_path, monkeypatch, active=True, reload_rc=1)
    reloaded, hint = reload_sorter()
    assert not reloaded and "denied" in hint and "sudo systemctl reload waste-sorter.service" in hint


@pytest.mark.parametrize("option, message", [
    (["--target-luma", "300"], "--target-luma must be in 1..254"),
    (["--width", "-5"], "--width must be in 64..4096"),
    (["--exposure-us", "0"], "--exposure-us must be in 1..10000000"),
    (["--colour-gains", "1.5", "99"], "--colour-gains must each be in 0.05..32"),
    (["--source", "picamera2:x"], "--source: camera source 'picamera2:x': expected picamera2, picamera2:N or "
                                  "opencv:N (N a camera number)"),
])
def test_bad_arguments_are_one_line_usage_errors(tmp_path, capsys, option, message):
    assert waste_sorter(["calibrate", "--out", str(tmp_path / "c.json"), "--source", "sim", "--yes", *option]) == 2
    assert capsys.readouterr().err == f"waste-sorter calibrate: error: {message}\n"
    assert not list(tmp_path.iterdir())


def test_a_missing_source_is_a_camera_error(tmp_path, capsys):
    assert calibrate(tmp_path / "c.json", "--source", str(tmp_path / "missing.mp4")) == 74
    assert capsys.readouterr().err.count("\n") == 1


def test_an_out_path_that_cannot_be_made_is_a_one_line_error_after_the_capture(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "cal" / "calibration.json"
    assert calibrate(out, "--source", "sim", "--no-reload") == 80
    err = capsys.readouterr().err
    assert err.startswith(f"waste-sorter calibrate: error: {out.parent}: folder for the calibration cannot be made")
    assert err.count("\n") == 1


def test_a_histogram_that_cannot_be_written_is_only_a_warning(tmp_path, caplog):
    from calibration.report import write_histogram
    from helpers import CALIBRATION_BOARD, make_calibration

    path = tmp_path / "missing-folder" / "histogram.png"
    assert write_histogram(path, CALIBRATION_BOARD, make_calibration()) is None
    assert any("histogram not written" in r.getMessage() for r in caplog.records)
