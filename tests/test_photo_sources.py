"""Training and evaluation on several photo sources with the labels they really have:
set-valued folders (``paper-or-cardboard``: either class is right), folders mapped to a class
(``other-wood`` -> trash), and photos of another shape laid on a 4:3 board instead of stretched."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the train extra

from device.cli import main as cli_main  # noqa: E402
from device.errors import DataError, UsageError  # noqa: E402
from device.scenes.relight import PHOTO_BOARD_ALBEDO, frame_shaped, to_uint8  # noqa: E402
from export.data_split import load_data_split, split_for_training  # noqa: E402
from export.evaluation import Evaluation  # noqa: E402
from export.loss import label_set_loss, soft_cross_entropy  # noqa: E402
from export.split import load_split, make_split, parse_label_map, with_label_map  # noqa: E402
from helpers import TRASHNET  # noqa: E402

WEB_MAP = {"paper-or-cardboard": ("cardboard", "paper"), "other-wood": ("trash",)}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[Path, Path]:
    """A TrashNet-like folder (6 real photos per class) and a web-like one whose folders are
    glass, paper-or-cardboard and other-wood (real TrashNet photos standing in, some cut to
    other shapes)."""
    root = tmp_path_factory.mktemp("sources")
    trashnet, web = root / "trashnet", root / "web"
    for class_dir in sorted(p for p in TRASHNET.iterdir() if p.is_dir()):
        (trashnet / class_dir.name).mkdir(parents=True)
        for photo in sorted(class_dir.glob("*.jpg"))[:6]:
            (trashnet / class_dir.name / photo.name).symlink_to(photo)
    for folder, source in (("glass", "glass"), ("paper-or-cardboard", "cardboard"), ("other-wood", "trash")):
        (web / folder).mkdir(parents=True)
        for i, photo in enumerate(sorted((TRASHNET / source).glob("*.jpg"))[20:26]):
            rgb = cv2.imread(str(photo))
            cv2.imwrite(str(web / folder / f"w{i}.jpg"), rgb[:, 64:448] if i % 2 else rgb)  # 384x384: square
    return trashnet, web


def test_label_map_options_parse_and_refuse_malformed_ones():
    assert parse_label_map(["paper-or-cardboard=paper,cardboard", "other-wood=trash"]) == {
        "paper-or-cardboard": ("cardboard", "paper"), "other-wood": ("trash",)}
    for bad in ("paper-or-cardboard", "=paper", "x=", "x=paper,paper"):
        with pytest.raises(UsageError, match="--label-map"):
            parse_label_map([bad])


def test_a_label_map_is_recorded_in_the_manifest_and_its_hash(sources, tmp_path):
    _, web = sources
    plain = make_split(web, val_frac=0.2, test_frac=0.2, seed=0)
    mapped = with_label_map(plain, {**WEB_MAP, "other-carton": ("trash",)})  # a folder this source lacks
    assert mapped.label_map == WEB_MAP
    assert mapped.sha256 != plain.sha256 and mapped.files == plain.files
    mapped.save(tmp_path / "s.json")
    again = load_split(tmp_path / "s.json", web)
    assert again.label_map == WEB_MAP and again.sha256 == mapped.sha256
    raw = json.loads((tmp_path / "s.json").read_text())
    raw["label_map"]["other-wood"] = ["glass"]  # edited by hand: the hash says so
    (tmp_path / "s.json").write_text(json.dumps(raw))
    with pytest.raises(DataError, match="hash does not match"):
        load_split(tmp_path / "s.json", web)
    # a manifest without a map keeps the hash it always had (the shipped model's split)
    assert "label_map" not in json.loads(Path("device/model/split.json").read_text())


def test_several_sources_have_one_class_list_and_set_valued_labels(sources, tmp_path):
    trashnet, web = sources
    split = split_for_training(tmp_path / "s.json", tmp_path / "out.json", [trashnet, web], val_frac=0.2,
                               test_frac=0.2, seed=0, label_map=WEB_MAP)
    assert split.classes == ("cardboard", "glass", "metal", "paper", "plastic", "trash")
    assert split.targets[6:] == ((0, 3),)  # cardboard or paper, after the six classes
    assert split.target_names[6:] == ("paper-or-cardboard",)
    labels = {p.parent.name: label for p, label in split.folder_paths(1, "train") + split.folder_paths(1, "test")}
    assert labels == {"glass": 1, "paper-or-cardboard": 6, "other-wood": 5}
    assert load_data_split(tmp_path / "out.json", [trashnet, web]).sha256 == split.sha256
    with pytest.raises(DataError, match="records the label map"):  # the manifest's map, not another
        split_for_training(tmp_path / "s.json", tmp_path / "out.json", [trashnet, web], val_frac=0.2,
                           test_frac=0.2, seed=0, label_map={"paper-or-cardboard": ("paper",)})


def test_set_loss_is_cross_entropy_on_the_summed_probability():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    one_hot = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    for smoothing in (0.0, 0.1):
        assert label_set_loss(logits, one_hot, smoothing) == pytest.approx(
            soft_cross_entropy(logits, one_hot, smoothing).item(), abs=1e-6)
    either = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    p = torch.softmax(logits, 1)
    assert label_set_loss(logits, either, 0.0) == pytest.approx(-torch.log(p[:, 0] + p[:, 1]).mean().item(), abs=1e-6)
    assert label_set_loss(logits, either, 0.0) < label_set_loss(logits, one_hot, 0.0)


def test_a_photo_of_another_shape_is_laid_on_a_4x3_board_not_stretched():
    board = np.full((400, 200, 3), 200, np.uint8)  # a tall photo of a dark 60x100 item
    board[150:250, 70:130] = (40, 90, 160)
    for camera_frame in (np.full((384, 512, 3), 120, np.uint8), np.full((512, 384, 3), 120, np.uint8)):
        assert frame_shaped(camera_frame) is camera_frame  # a frame, or TrashNet's upright one: as it is
    framed = frame_shaped(board)
    assert framed.shape == (400, 533, 3)
    dark = np.argwhere(framed.mean(2) < 150)
    (top, left), (bottom, right) = dark.min(0), dark.max(0)
    assert abs(bottom - top + 1 - 100) <= 3 and abs(right - left + 1 - 60) <= 3  # its own size (stretched: 160 wide)
    assert abs((left + right) / 2 - 533 / 2) <= 1  # in the middle
    white = to_uint8(np.float32(PHOTO_BOARD_ALBEDO))
    assert np.abs(framed[:, :100].astype(int) - white).max() <= 2  # the added board: the photo's own, level


def test_evaluation_counts_either_class_of_a_set_valued_label():
    labels = np.array([0, 1, 3, 3, 3])  # classes a, b, c; label 3 = "a-or-b"
    predicted = np.array([0, 0, 0, 1, 2])
    probs = np.full((5, 3), 0.1)
    probs[np.arange(5), predicted] = 0.8
    e = Evaluation(("a", "b", "c"), labels, probs, tuple(f"p{i}" for i in range(5)), label_sets=(("a-or-b", (0, 1)),))
    s = e.summary()
    assert s["accuracy"] == pytest.approx(3 / 5)
    assert s["confusion"] == [[1, 0, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]]
    assert s["per_label_set"] == {"a-or-b": {"recall": pytest.approx(2 / 3), "n": 3}}
    assert s["per_class"]["a"]["precision"] == pytest.approx(2 / 3)  # the b photo called a is wrong
    assert [(p, true) for p, true, _, _ in e.most_confused()] == [("p1", "b"), ("p4", "a-or-b")]


@pytest.mark.slow
def test_train_and_evaluate_on_two_sources(sources, tmp_path, capsys):
    trashnet, web = sources
    run = tmp_path / "run"
    maps = ["--label-map", "paper-or-cardboard=cardboard,paper", "--label-map", "other-wood=trash"]
    common = ["--data", str(trashnet), "--data", str(web), "--output-dir", str(run), "--val-frac", "0.2",
              "--test-frac", "0.2", "--input-size", "64", "--batch-size", "8", "--epochs", "1", "--no-amp",
              "--arch", "efficientnet_lite0", "--opt", "adamw", "--lr", "1e-3"]
    assert cli_main(["train", *common, *maps]) == 0
    out = capsys.readouterr().out
    assert "label map: paper-or-cardboard -> cardboard or paper; other-wood -> trash" in out
    typo = ["--output-dir", str(tmp_path / "typo"), "--label-map", "other-woood=trash"]
    assert cli_main(["train", *common, *typo]) == 2  # a typo is named, and no split written with it
    assert "no data folder has a class folder 'other-woood'" in capsys.readouterr().err
    assert not (tmp_path / "typo" / "split.json").exists()
    model = tmp_path / "m.onnx"
    assert cli_main(["export", "--checkpoint", str(run / "checkpoint.pth"), "--data", str(trashnet), "--data",
                     str(web), "--split", str(run / "split.json"), "--out", str(model), "--parity-photos", "2"]) == 0
    capsys.readouterr()
    assert cli_main(["evaluate", "--data", str(trashnet), "--data", str(web), "--split", str(run / "split.json"),
                     "--model", str(model), "--json", "--relight", "grey"]) == 0
    report = json.loads(capsys.readouterr().out)
    web_report = report["folders"][1]
    assert web_report["n"] == len(load_data_split(run / "split.json", [trashnet, web]).folder_paths(1, "test"))
    assert "paper-or-cardboard" in web_report["per_label_set"] and "grey" in web_report["relit"]
    assert cli_main(["evaluate", "--data", str(trashnet), "--data", str(web), "--split", str(run / "split.json"),
                     "--model", str(model), "--out-dir", str(tmp_path / "plots")]) == 0
    text = capsys.readouterr().out
    assert f"== {web}" in text and "(right as cardboard or paper)" in text
    assert (tmp_path / "plots" / "web_confusion.png").is_file() and (tmp_path / "plots" / "confusion.png").is_file()


def test_replay_per_class_keeps_set_valued_labels(sources, tmp_path):
    trashnet, web = sources
    split = split_for_training(tmp_path / "s.json", tmp_path / "out.json", [web, trashnet], val_frac=0.2,
                               test_frac=0.2, seed=0, label_map=WEB_MAP)
    replayed = split.training_items(with_val=False, replay_per_class=1)
    first_folder = {label for p, label in replayed if web in p.parents}
    assert first_folder == {split.classes.index("glass"), split.classes.index("trash"), 6}  # 6: paper-or-cardboard


# -- teachers kept to the sources they know (train --teacher-for) --------------------------
def test_teacher_for_parses_and_refuses_malformed_ones(sources):
    from export.teacher_sources import parse_teacher_for

    trashnet, web = sources
    assert parse_teacher_for(["web=1"], [trashnet, web], 2) == {1: (0,)}
    assert parse_teacher_for(["trashnet=2,1", "web=2"], [trashnet, web], 2) == {0: (0, 1), 1: (1,)}
    assert parse_teacher_for(None, [trashnet, web], 0) == {}
    for specs, n, words in [(["web"], 2, "expected SOURCE=K"), (["webb=1"], 2, "no --data folder is named 'webb'"),
                            (["web=3"], 2, "there is no teacher 3"), (["web=0"], 2, "there is no teacher 0"),
                            (["web=one"], 2, "expected SOURCE=K"), (["web=1", "web=2"], 2, "given twice"),
                            (["web=1"], 0, "needs --teacher")]:
        with pytest.raises(UsageError, match=words):
            parse_teacher_for(specs, [trashnet, web], n)
    with pytest.raises(UsageError, match="more than one --data folder is named 'web'"):
        parse_teacher_for(["web=1"], [web, trashnet.parent / "elsewhere" / "web"], 1)


def test_teacher_shares_follow_each_photos_folder_and_reach_the_loader_batches(sources, tmp_path):
    from device.contract import ModelContract
    from export.data import BatchAugment
    from export.loader import AugmentedBatches
    from export.teacher_sources import teacher_shares

    trashnet, web = sources
    split = split_for_training(tmp_path / "s.json", tmp_path / "out.json", [trashnet, web], val_frac=0.2,
                               test_frac=0.2, seed=0, label_map=WEB_MAP)
    items = split.training_items(with_val=True)
    shares = teacher_shares(items, split, {1: (0,)}, 2)
    of_web = [web in path.parents for path, _ in items]
    assert shares.tolist() == [[1.0, 0.0] if w else [1.0, 1.0] for w in of_web]
    assert sum(of_web) == len(split.folder_paths(1, "train")) + len(split.folder_paths(1, "val")) > 0
    contract = ModelContract(classes=split.classes, input_width=64, input_height=48, flatfield="none")
    batches = AugmentedBatches(items, torch.ones(len(items), 6), BatchAugment((48, 64), contract), mixup=0.0,
                               photo_view=False, seed=0, rank=0, shares=shares)
    picked = [0, of_web.index(True)]
    assert torch.equal(batches[(0, 0, picked)].teacher_shares, shares[picked])


def test_resume_reads_teacher_for_by_its_meaning():
    from argparse import Namespace

    from export.train import resume_mismatches

    assert resume_mismatches({"teacher_for": ["web=1,2", "a=1"]}, Namespace(teacher_for=["a=1", "web=2,1"])) == []
    assert resume_mismatches({"teacher_for": ["web=1,2"]}, Namespace(teacher_for=["web=1"])) == [
        "teacher_for=['web=1,2'], not ['web=1']"]
    assert resume_mismatches({}, Namespace(teacher_for=None)) == []  # a checkpoint from before it
    assert resume_mismatches({}, Namespace(teacher_for=["web=1"])) != []


def test_shared_teacher_targets_weigh_each_photos_teachers_and_run_a_teacher_only_where_it_has_a_share():
    from export.loss import shared_teacher_targets, teacher_targets
    from export.models import build_model, forward_features

    torch.manual_seed(0)
    a, b = (build_model("resnet34", 6, "scratch").eval() for _ in range(2))
    x = torch.randn(4, 3, 48, 64)
    (la, fa), (lb, fb) = forward_features(a, x), forward_features(b, x)
    pa, pb = torch.softmax(la / 2, 1), torch.softmax(lb / 2, 1)
    every = torch.ones(4, 2)
    probs, features, columns = shared_teacher_targets([a, b], x, 2.0, every)
    p_mean, f_cat = teacher_targets([a, b], x, 2.0)
    assert torch.allclose(probs, p_mean, atol=1e-6) and torch.allclose(features, f_cat, atol=1e-5)
    assert torch.equal(columns, torch.ones_like(features))
    seen = []
    b.conv1.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    shares = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.25, 0.75], [1.0, 0.0]])
    probs, features, columns = shared_teacher_targets([a, b], x, 2.0, shares)
    assert seen == [2], "teacher b runs on the two photos it has a share in, not on all four"
    assert torch.allclose(probs[1], pa[1], atol=1e-6) and torch.allclose(probs[3], pa[3], atol=1e-6)
    assert torch.allclose(probs[2], 0.25 * pa[2] + 0.75 * pb[2], atol=1e-5)
    assert torch.allclose(probs.sum(1), torch.ones(4))
    width = fa.shape[1]
    assert torch.allclose(features[2], torch.cat([0.5 * fa[2], 0.75 ** 0.5 * fb[2]]), atol=1e-4)
    assert torch.equal(features[1, width:], torch.zeros(width)) and torch.allclose(features[1, :width], fa[1], atol=1e-5)
    assert columns[1].tolist() == [1.0] * width + [0.0] * width
    # In the cosine (student and teacher scaled alike) each teacher's block counts by its share.
    s, t = torch.randn(2 * width), features[2] / columns[2]
    dot = ((s * columns[2]) * (t * columns[2])).sum()
    assert torch.allclose(dot, 0.25 * (s[:width] * t[:width]).sum() + 0.75 * (s[width:] * t[width:]).sum(), rtol=1e-4)


def test_a_mixed_batch_mixes_its_teacher_shares_as_its_photos():
    from device.contract import ModelContract
    from export.data import BatchAugment
    from export.loss import make_batch

    contract = ModelContract(classes=tuple("abcdef"), input_width=64, input_height=48, flatfield="none")
    images = torch.randint(0, 255, (4, 3, 60, 80), dtype=torch.uint8)
    shares = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    torch.manual_seed(3)
    batch = make_batch(images, torch.eye(6)[:4], BatchAugment((48, 64), contract), 1.0, False, shares)
    lam, perm = batch.mix
    assert 0 < lam < 1 and torch.allclose(batch.teacher_shares, lam * shares + (1 - lam) * shares[perm])
    assert make_batch(images, torch.eye(6)[:4], BatchAugment((48, 64), contract), 0.0, False, None).teacher_shares is None


def test_train_with_a_teacher_kept_to_one_source(sources, tmp_path, capsys, monkeypatch):
    import export.loss

    trashnet, web = sources
    maps = ["--label-map", "paper-or-cardboard=cardboard,paper", "--label-map", "other-wood=trash"]
    common = ["--data", str(trashnet), "--data", str(web), "--val-frac", "0.2", "--test-frac", "0.2",
              "--input-size", "64", "--batch-size", "8", "--epochs", "1", "--no-amp", "--mixup", "0.5", *maps]
    teacher = tmp_path / "teacher"
    assert cli_main(["train", *common, "--output-dir", str(teacher)]) == 0
    ckpt = str(teacher / "checkpoint.pth")
    student = ["--output-dir", str(tmp_path / "student"), "--split", str(teacher / "split.json"),
               "--teacher", ckpt, "--teacher", ckpt]
    capsys.readouterr()
    seen, real = [], export.loss.shared_teacher_targets
    monkeypatch.setattr(export.loss, "shared_teacher_targets",
                        lambda teachers, x, t, shares: seen.append(shares.clone()) or real(teachers, x, t, shares))
    assert cli_main(["train", *common, *student, "--teacher-for", "web=1"]) == 0
    assert "teachers: web by teacher 1; other folders by every teacher" in capsys.readouterr().out
    shares = torch.cat(seen)  # every step's: teacher 1 labels every photo, teacher 2 not web's
    assert len(seen) > 0 and torch.all(shares[:, 0] == 1) and torch.any(shares[:, 1] < 1)
    saved = torch.load(tmp_path / "student" / "checkpoint.pth", weights_only=False)["args"]
    assert saved["teacher_for"] == ["web=1"]
    code = cli_main(["train", *common, *student, "--teacher-for", "web=2", "--resume"])
    assert code == DataError.exit_code and "teacher_for=['web=1'], not ['web=2']" in capsys.readouterr().err
    typo = ["--output-dir", str(tmp_path / "typo"), "--teacher", ckpt, "--teacher-for", "wbe=1"]
    assert cli_main(["train", *common, *typo]) == UsageError.exit_code
    err = capsys.readouterr().err.strip()
    assert "no --data folder is named 'wbe' (folders: trashnet, web)" in err and "\n" not in err
    assert not (tmp_path / "typo").exists(), "refused before anything is written"
