"""Shared fixtures: the tiny colour-classifier model saved as a package, scripted scenes rendered
by the project's own renderer, the shared TrashNet folder, and the sorter's signal handlers put
back. Shared code that is not a fixture is in helpers.py."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from device.config import load_config
from device.commands.demo_scene import SceneItem, Timing, make_board, render
from export.package import save_model
from helpers import BLUE, CONFIG, PER_CLASS, RED, TRASHNET, colour_contract, colour_model, item_on


@pytest.fixture
def colour_model_path(tmp_path) -> Path:
    path = tmp_path / "colour.onnx"
    save_model(colour_model(), path, colour_contract())
    return path


@pytest.fixture
def trashnet() -> Path:
    if not TRASHNET.is_dir():
        pytest.fail(f"{TRASHNET} is missing: tests read the shared TrashNet photos from ../shared")
    return TRASHNET


@pytest.fixture(scope="module")
def small_trashnet(tmp_path_factory) -> Path:
    """PER_CLASS real TrashNet photos per class (symlinks into ../shared)."""
    root = tmp_path_factory.mktemp("trashnet")
    for class_dir in sorted(p for p in TRASHNET.iterdir() if p.is_dir()):
        (root / class_dir.name).mkdir()
        for photo in sorted(class_dir.glob("*.jpg"))[:PER_CLASS]:
            (root / class_dir.name / photo.name).symlink_to(photo)
    return root


# -- scripted scenes -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_item_scene(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A red item (-> paper) and a blue item (-> the pulse output) at 10 fps: (video, truth)."""
    board = make_board(seed=1)
    path = tmp_path_factory.mktemp("scene") / "scene.mp4"
    items = [SceneItem(item_on(board, RED), "cardboard"), SceneItem(item_on(board, BLUE), "metal")]
    return path, render(items, path, board=board, timing=Timing(fps=10), seed=1)


@pytest.fixture
def scene_config(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    return load_config(path)


@pytest.fixture
def config_path(tmp_path, monkeypatch):
    """The test config (helpers.CONFIG) as a file, with gpiozero's MockFactory."""
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def own_signal_handlers():
    """Tests that install the sorter's signal handlers get the original ones back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)
