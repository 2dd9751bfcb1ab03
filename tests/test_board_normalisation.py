"""Board normalisation (the contract's flatfield step), relighting and ``evaluate --relight``."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import device.contract
from helpers import colour_contract, colour_model
from device.classifier import Classifier
from device.cli import main as cli_main
from device.contract import ModelContract, preprocess
from device.errors import ModelError
from device.flatfield import CANONICAL_BOARD, flatten_board
from device.scenes.relight import CONDITIONS, Condition, relight
from export.package import save_model


def photo(item_rgb=(200, 40, 40), board_rgb=(235, 232, 225), size=(128, 96)) -> np.ndarray:
    """A TrashNet-like photo: a near-white board, lit brighter in the middle, an item in it."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = 1.0 - 0.25 * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2)
    image = np.asarray(board_rgb, np.float32) * shade[..., None]
    image[h // 3:2 * h // 3, w // 3:2 * w // 3] = item_rgb
    return np.clip(image, 0, 255).astype(np.uint8)


def test_flatten_takes_vignetting_and_colour_cast_out_and_keeps_the_item():
    image = photo()
    cast = (image.astype(np.float32) * [1.0, 0.8, 0.55]).astype(np.uint8)  # warm light, corners darker
    for seen in (image, cast):
        flat = flatten_board(seen).astype(np.float32)
        board = np.concatenate([flat[:8].reshape(-1, 3), flat[-8:].reshape(-1, 3)])
        assert np.abs(board - CANONICAL_BOARD).max() < 8, "the board reads canonical grey everywhere"
    # The item comes out the same colour under both lights: it is judged against its board.
    item_plain = flatten_board(image)[40:56, 52:76].reshape(-1, 3).mean(0)
    item_warm = flatten_board(cast)[40:56, 52:76].reshape(-1, 3).mean(0)
    assert np.abs(item_plain - item_warm).max() < 6
    assert item_plain[0] > 2 * item_plain[1], "a red item stays red"


def test_an_item_touching_the_border_does_not_bend_the_board():
    image = photo()
    image[:, :12] = (30, 30, 30)  # a dark item lying across the left edge
    flat = flatten_board(image).astype(np.float32)
    assert np.abs(flat[:6, 40:].reshape(-1, 3) - CANONICAL_BOARD).max() < 10


def test_relit_photos_look_alike_to_a_board_normalised_model():
    image = photo()
    flat = {name: flatten_board(relight(image, c)).astype(np.float32) for name, c in CONDITIONS.items()}
    grey = flat["grey"]
    for name in ("warm", "dim"):  # the same board under another light: the light is divided out
        assert np.abs(flat[name] - grey)[8:-8, 8:-8].mean() < 4, name
    raw = {name: relight(image, c).astype(np.float32) for name, c in CONDITIONS.items()}
    assert np.abs(raw["warm"] - raw["grey"]).mean() > 20, "without normalisation the light shows"


def test_relighting_replaces_the_background_and_keeps_the_item():
    image = photo()
    green = relight(image, Condition("g", (0.2, 0.6, 0.2), vignette=0.0))
    corner = green[:10, :10].reshape(-1, 3).mean(0)
    assert corner[1] > corner[0] + 60, "the photo's white board became the green board"
    item = green[40:56, 52:76].reshape(-1, 3).mean(0)
    assert item[0] > item[1] + 80, "the red item stays red"


def test_contract_flatfield_is_versioned_and_checked():
    v1 = json.loads(colour_contract().to_json())
    v1.pop("flatfield")
    v1["version"] = 1
    assert ModelContract.from_json(json.dumps(v1)).flatfield == "none"  # models shipped before it
    border = ModelContract(("a", "b"), 64, 48, flatfield="border")
    assert ModelContract.from_json(border.to_json()) == border
    with pytest.raises(ModelError, match="flatfield policy 'sky'"):
        ModelContract(("a", "b"), 64, 48, flatfield="sky")
    with pytest.raises(ModelError, match="needs resize 'stretch'"):
        ModelContract(("a", "b"), 64, 48, flatfield="border", resize="center_crop")
    with pytest.raises(ModelError, match="version 1 has no flatfield"):
        ModelContract(("a", "b"), 64, 48, flatfield="border", version=1)


def bluish_frame_with_a_red_item() -> np.ndarray:
    """A red item on a board under strongly blue light: the whole frame averages blue."""
    frame = photo(item_rgb=(200, 60, 60), board_rgb=(235, 232, 225))
    return (frame.astype(np.float32) * [0.45, 0.6, 1.0]).astype(np.uint8)


def test_the_device_classifies_what_a_board_normalised_model_was_trained_to_see(tmp_path):
    """The colour model (mean colour of the input) says 'metal' (blue) for the raw frame; with
    the contract's flatfield step the board is grey and the red item decides: 'cardboard'."""
    frame = bluish_frame_with_a_red_item()
    labels = {}
    for flatfield in ("none", "border"):
        contract = ModelContract(colour_contract().classes, 64, 48, mean=(0.5,) * 3, std=(0.25,) * 3,
                                 flatfield=flatfield)
        path = tmp_path / f"{flatfield}.onnx"
        save_model(colour_model(), path, contract)
        with Classifier(path) as classifier:
            labels[flatfield] = classifier.classify([frame]).label
    assert labels == {"none": "metal", "border": "cardboard"}


def test_a_frame_and_a_training_photo_go_through_the_same_flatfield_function(monkeypatch):
    torch = pytest.importorskip("torch")
    from export.data import BatchAugment

    seen = []
    original = device.contract.flatten_board
    monkeypatch.setattr(device.contract, "flatten_board", lambda rgb: seen.append(rgb.shape) or original(rgb))
    contract = ModelContract(("a", "b"), 64, 48, flatfield="border")
    frame = bluish_frame_with_a_red_item()
    device_input = preprocess(frame, contract)
    assert seen == [(48, 64, 3)]  # the device: resized frame, then flatten_board
    images = torch.from_numpy(np.stack([frame, frame])).permute(0, 3, 1, 2)
    BatchAugment((48, 64), contract, relight_prob=0.0)(images)
    assert seen[1:] == [(96, 128, 3)] * 2  # training: each whole photo, then crops
    flat = original(cv2.resize(frame, (64, 48), interpolation=cv2.INTER_AREA))
    expected = (flat.astype(np.float32) / 255 - np.array(contract.mean, np.float32)) / np.array(contract.std, np.float32)
    assert np.allclose(device_input, expected.transpose(2, 0, 1), atol=1e-6)


def write_folder(root: Path) -> Path:
    for name, colour in (("cardboard", (200, 40, 40)), ("glass", (40, 180, 40)), ("metal", (40, 40, 200))):
        (root / name).mkdir(parents=True)
        for k in range(2):
            cv2.imwrite(str(root / name / f"{k}.jpg"), cv2.cvtColor(photo(item_rgb=colour), cv2.COLOR_RGB2BGR))
    return root


def test_evaluate_relight_reports_each_condition_and_the_labels_it_changed(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    save_model(colour_model(), model, colour_contract())
    data = write_folder(tmp_path / "photos")
    assert cli_main(["evaluate", "--model", str(model), "--data", str(data), "--json",
                     "--relight", "grey,warm", "--out-dir", str(tmp_path / "plots")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["accuracy"] == 1.0 and report["n"] == 6
    assert set(report["relit"]) == {"grey", "warm"}
    # Warm light turns the blue items' frames yellow: the raw-colour model loses them.
    warm = report["relit"]["warm"]
    assert warm["per_class"]["metal"]["recall"] == 0.0
    assert warm["label_changed"] == pytest.approx(1 - warm["accuracy"])
    assert (tmp_path / "plots" / "confusion_warm.png").is_file()
    assert cli_main(["evaluate", "--model", str(model), "--data", str(data), "--relight", "all"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n{name} " in out for name in ("photo", *CONDITIONS))


def test_evaluate_relight_names_an_unknown_condition(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    save_model(colour_model(), model, colour_contract())
    assert cli_main(["evaluate", "--model", str(model), "--data", str(tmp_path), "--relight", "grey,moon"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown condition moon" in err


def test_training_relighting_moves_the_item_to_another_board_and_light():
    from export.data import random_relight

    image = photo(item_rgb=(200, 40, 40))
    h, w = image.shape[:2]
    item = (slice(h // 3 + 3, 2 * h // 3 - 3), slice(w // 3 + 3, 2 * w // 3 - 3))
    boards = []
    for seed in range(20):
        out = random_relight(image, np.random.default_rng(seed), 0.6)
        boards.append(out[:10, :10].reshape(-1, 3).mean(0))
        red, green, blue = flatten_board(out)[item].reshape(-1, 3).astype(np.float32).mean(0)
        assert red > green + 30 and red > blue + 30, f"seed {seed}: the item is still red on its board"
    assert np.ptp(np.array(boards), axis=0).min() > 60, "boards and lights vary from dark to bright"


def test_training_boards_are_often_textured_as_real_ones_are():
    from export.data import random_board

    boards = [random_board((0.5, 0.4, 0.3), (64, 48), np.random.default_rng(seed), 0.6) for seed in range(40)]
    textured = [b for b in boards if isinstance(b, np.ndarray)]
    assert 12 <= len(textured) <= 36 and all(b == (0.5, 0.4, 0.3) for b in boards if not isinstance(b, np.ndarray))
    for board in textured:
        assert board.shape == (48, 64, 3)
        assert np.allclose(board.mean((0, 1)), (0.5, 0.4, 0.3), rtol=0.05), "the board keeps its colour"
        assert 0.01 < (board.std((0, 1)) / board.mean((0, 1))).mean() < 0.2, "with a grain of a few percent"


def test_camera_artefacts_smear_fine_texture_and_keep_colours():
    from export.data import camera_artefacts

    rng = np.random.default_rng(0)
    fine = np.clip(rng.normal(0, 25, (96, 128, 3)) + [190, 60, 50], 0, 255).astype(np.uint8)
    for seed in range(5):
        out = camera_artefacts(fine, np.random.default_rng(seed))
        assert out.shape == fine.shape and out.dtype == np.uint8
        assert np.abs(out.mean((0, 1)) - fine.mean((0, 1))).max() < 4, "red stays red (no BGR swap)"
        assert out.std((0, 1)).mean() < 0.8 * fine.std((0, 1)).mean(), "per-pixel noise is smeared"


def test_training_without_the_newer_augmentations_draws_as_runs_before_them_did():
    """--camera-prob 0 --textured-board-prob 0: each relit photo is exactly what the relighting
    before those options made from the same random draws (older runs stay reproducible)."""
    torch = pytest.importorskip("torch")
    from device.scenes.relight import random_condition
    from export.data import device_conditions

    contract = ModelContract(("a", "b"), 64, 48, flatfield="border")
    images = torch.from_numpy(np.stack([photo(), photo(item_rgb=(40, 60, 200))])).permute(0, 3, 1, 2)
    torch.manual_seed(7)
    now = device_conditions(images, contract, 1.0, camera_prob=0.0, textured_prob=0.0)
    torch.manual_seed(7)
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ())))
    for image, got in zip(images, now):
        rng.random()  # whether to relight (relight_prob 1: yes)
        rgb = relight(image.permute(1, 2, 0).numpy(), random_condition(rng))
        noisy = np.clip(rgb.astype(np.float32) + rng.normal(0.0, rng.uniform(0.0, 4.0), rgb.shape) + 0.5, 0, 255)
        assert np.array_equal(got.permute(1, 2, 0).numpy(), flatten_board(noisy.astype(np.uint8)))


def test_the_teachers_photo_view_is_the_students_crop_of_the_photo_as_it_is():
    """--teacher-view photo: the second view is what training without relighting makes of the
    same photos from the same draws (crop, flips, colour), while the student's view is relit;
    mixing pairs both views alike."""
    torch = pytest.importorskip("torch")
    from export.data import BatchAugment, mixup

    contract = ModelContract(("a", "b"), 64, 48, flatfield="border")
    images = torch.from_numpy(np.stack([photo(), photo(item_rgb=(40, 60, 200))] * 2)).permute(0, 3, 1, 2)
    torch.manual_seed(3)
    relit, photos = BatchAugment((48, 64), contract, relight_prob=1.0, textured_prob=0.6).views(images, with_photo=True)
    torch.manual_seed(3)
    plain = BatchAugment((48, 64), contract, relight_prob=0.0)(images)
    assert photos.shape == relit.shape == plain.shape == (4, 3, 48, 64)
    assert torch.allclose(photos, plain, atol=1e-5)
    assert (relit - photos).abs().mean() > 0.1, "the student's view is on another board and light"
    labels = torch.eye(2)[[0, 1, 0, 1]]
    torch.manual_seed(0)
    mixed, targets, mixed_photos = mixup(relit, labels, 1.0, photos)
    torch.manual_seed(0)
    alone, same_targets, _ = mixup(photos, labels, 1.0)
    assert torch.equal(targets, same_targets) and not torch.equal(mixed, relit)
    assert torch.allclose(mixed_photos, alone)


def test_the_textured_condition_lays_the_item_on_a_grainy_board():
    def grain(image):  # what a 5x5 blur takes from a corner of the board
        corner = image[:24, :24].astype(np.float32)
        return np.abs(corner - cv2.blur(corner, (5, 5))).mean()

    grey, textured = relight(photo(), CONDITIONS["grey"]), relight(photo(), CONDITIONS["textured"])
    assert grain(grey) < 0.5 < 1.5 < grain(textured)
    assert abs(float(grey[:24, :24].mean()) - float(textured[:24, :24].mean())) < 6, "the same grey"
