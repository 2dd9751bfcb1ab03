"""PacedCamera plays a recording as a live camera would deliver it; the clock and the sleep are
the test's, so nothing waits."""

from __future__ import annotations

import cv2

from device.camera import open_camera
from device.camera.paced import PacedCamera
from device.commands.demo_scene import make_board


def recording(tmp_path, n: int, fps: float):
    folder = tmp_path / "frames"
    folder.mkdir()
    board = make_board(seed=1)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:03d}.png"), board)
    return open_camera(str(folder), folder_fps=fps)


def test_frames_come_at_their_pace_and_a_late_loop_loses_the_frames_it_missed(tmp_path):
    now = [100.0]
    with recording(tmp_path, 10, fps=10) as source:
        camera = PacedCamera(source, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
        first = camera.capture()
        now[0] += 0.35  # the loop was busy for 3.5 frame intervals
        second = camera.capture()
    assert (first.index, first.timestamp_s) == (0, 0.0)
    assert second.index == 3 and camera.dropped == 2 and abs(second.timestamp_s - 0.35) < 1e-9


def test_a_decoder_slower_than_real_time_does_not_chase_the_clock_to_the_end(tmp_path):
    """Each frame takes 40 ms to decode at 30 fps: a capture skips to the newest frame due when
    it was called, not to the end of the file (it used to read all of it in one capture)."""
    now = [0.0]
    with recording(tmp_path, 30, fps=30) as source:
        original = source.capture

        def slow_capture():
            now[0] += 0.040
            return original()

        source.capture = slow_capture
        camera = PacedCamera(source, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
        delivered = [camera.capture() for _ in range(5)]
    assert all(frame is not None for frame in delivered)
    assert delivered[-1].index < 29 and camera.dropped < 25
