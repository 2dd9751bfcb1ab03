"""Workstation side: split, train -> export -> quantize -> evaluate on a few real photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the train extra; a device-only install skips this file

from device.classifier import Classifier  # noqa: E402
from device.cli import main as cli_main  # noqa: E402
from device.contract import KEY_CONTRACT, KEY_METRICS, KEY_SPLIT_SHA256, ModelContract  # noqa: E402
from device.errors import DataError, UsageError  # noqa: E402
from export.evaluate import Evaluation  # noqa: E402
from export.models import checkpoint_weights, load_checkpoint  # noqa: E402
from export.package import read_metadata  # noqa: E402
from export.split import load_split, make_split  # noqa: E402
from helpers import PER_CLASS  # noqa: E402


def test_split_is_deterministic_and_stratified(trashnet):
    a = make_split(trashnet, val_frac=0.1, test_frac=0.15, seed=0)
    b = make_split(trashnet, val_frac=0.1, test_frac=0.15, seed=0)
    c = make_split(trashnet, val_frac=0.1, test_frac=0.15, seed=1)
    assert a.sha256 == b.sha256 and a.files == b.files
    assert a.sha256 != c.sha256
    all_files = [f for s in ("train", "val", "test") for f, _ in a.files[s]]
    assert len(all_files) == len(set(all_files)) == 2148
    trash = a.classes.index("trash")  # 116 photos: 17 test, 12 val
    assert sum(1 for _, label in a.files["test"] if label == trash) == round(116 * 0.15)
    assert sum(1 for _, label in a.files["val"] if label == trash) == round(116 * 0.10)


def test_split_manifest_round_trip_and_tampering(small_trashnet, tmp_path):
    split = make_split(small_trashnet, val_frac=0.25, test_frac=0.25, seed=3)
    split.save(tmp_path / "split.json")
    assert load_split(tmp_path / "split.json", small_trashnet).sha256 == split.sha256
    raw = json.loads((tmp_path / "split.json").read_text())
    raw["train"] = raw["train"][1:]
    (tmp_path / "split.json").write_text(json.dumps(raw))
    with pytest.raises(DataError, match="hash does not match"):
        load_split(tmp_path / "split.json", small_trashnet)


def test_evaluation_figures_are_exact():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 2, 2])
    probs = np.full((6, 3), 0.1)
    probs[np.arange(6), predicted] = 0.8
    summary = Evaluation(("a", "b", "c"), labels, probs, tuple(f"p{i}" for i in range(6))).summary()
    assert summary["accuracy"] == pytest.approx(4 / 6)
    assert summary["n"] == 6
    assert summary["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert summary["per_class"]["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "n": 3}
    assert summary["per_class"]["b"] == {"precision": 0.5, "recall": 0.5, "n": 2}
    assert summary["per_class"]["c"] == {"precision": 0.5, "recall": 1.0, "n": 1}


TRAIN = ["--val-frac", "0.25", "--test-frac", "0.25", "--input-size", "64", "--batch-size", "8",
         "--epochs", "1", "--no-amp"]


@pytest.mark.slow
def test_train_export_quantize_evaluate(small_trashnet, tmp_path, capsys):
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    assert cli_main(["train", "--data", str(small_trashnet), "--output-dir", str(teacher), "--arch",
                     "efficientnet_lite0", "--init", "imagenet", "--opt", "adamw", "--lr", "1e-3", *TRAIN]) == 0
    assert cli_main(["train", "--data", str(small_trashnet), "--output-dir", str(student), "--split",
                     str(teacher / "split.json"), "--teacher", str(teacher / "checkpoint.pth"),  # an ensemble of two
                     "--teacher", str(teacher / "checkpoint.pth"), "--mixup", "0.5", "--teacher-view", "photo",
                     "--min-input-size", "32", *TRAIN]) == 0
    fp32, int8 = tmp_path / "m-fp32.onnx", tmp_path / "m-int8.onnx"
    assert cli_main(["export", "--checkpoint", str(student / "checkpoint.pth"), "--data", str(small_trashnet),
                     "--split", str(teacher / "split.json"), "--out", str(fp32), "--parity-photos", "4"]) == 0
    assert "max |Δlogit|" in capsys.readouterr().out
    refused_fp32 = tmp_path / "refused-fp32.onnx"  # a parity limit no export meets: nothing is left
    assert cli_main(["export", "--checkpoint", str(student / "checkpoint.pth"), "--data", str(small_trashnet),
                     "--split", str(teacher / "split.json"), "--out", str(refused_fp32), "--parity-photos", "4",
                     "--max-delta", "-1"]) == 79
    assert "ONNX output differs from PyTorch" in capsys.readouterr().err
    assert not refused_fp32.exists() and not refused_fp32.with_suffix(".manifest.json").exists()
    # A refused export onto a good model's path leaves that model and its manifest as they were.
    good = fp32.read_bytes(), fp32.with_suffix(".manifest.json").read_bytes()
    assert cli_main(["export", "--checkpoint", str(student / "checkpoint.pth"), "--data", str(small_trashnet),
                     "--split", str(teacher / "split.json"), "--out", str(fp32), "--parity-photos", "4",
                     "--max-delta", "-1"]) == 79
    assert "nothing written" in capsys.readouterr().err
    assert (fp32.read_bytes(), fp32.with_suffix(".manifest.json").read_bytes()) == good
    assert cli_main(["quantize", "--model", str(fp32), "--data", str(small_trashnet), "--split",
                     str(teacher / "split.json"), "--out", str(int8), "--calibration-photos", "8",
                     "--max-drop", "100", "--report", str(tmp_path / "q.json")]) == 0
    # Every convolution and residual Add runs in int8 once onnxruntime has optimised the graph.
    assert json.loads((tmp_path / "q.json").read_text())["fp32_ops_left"] == {}
    refused = tmp_path / "refused.onnx"  # a guard no model passes: nothing may be written
    assert cli_main(["quantize", "--model", str(fp32), "--data", str(small_trashnet), "--split",
                     str(teacher / "split.json"), "--out", str(refused), "--calibration-photos", "8",
                     "--max-drop", "-101"]) == 79
    assert "nothing written" in capsys.readouterr().err
    assert not refused.exists() and not refused.with_suffix(".manifest.json").exists()
    meta = read_metadata(int8)
    contract = ModelContract.from_json(meta[KEY_CONTRACT])
    assert contract.classes == ("cardboard", "glass", "metal", "paper", "plastic", "trash")
    assert (contract.input_width, contract.input_height) == (64, 48)
    assert meta[KEY_SPLIT_SHA256] == load_split(teacher / "split.json", small_trashnet).sha256
    assert "test_acc_int8" in json.loads(meta[KEY_METRICS])
    classifier = Classifier(int8)  # the device loads it: manifest SHA-256 and contract check out
    assert classifier.classes == contract.classes
    manifest = json.loads(int8.with_suffix(".manifest.json").read_text())
    assert manifest["sha256"] == classifier.sha256
    capsys.readouterr()
    assert cli_main(["evaluate", "--model", str(int8), "--data", str(small_trashnet), "--json",
                     "--out-dir", str(tmp_path / "eval")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == sum(1 for p in small_trashnet.rglob("*.jpg")) == 6 * PER_CLASS
    assert {c: m["n"] for c, m in report["per_class"].items()} == {c: PER_CLASS for c in contract.classes}
    assert report["skipped"] == []
    assert (tmp_path / "eval" / "confusion.png").stat().st_size > 1000
    # On the test split, evaluate scores exactly what quantize recorded for the int8 model.
    assert cli_main(["evaluate", "--model", str(int8), "--data", str(small_trashnet), "--json", "--split",
                     str(teacher / "split.json"), "--subset", "test"]) == 0
    report = json.loads(capsys.readouterr().out)
    quantized = json.loads(meta[KEY_METRICS])
    assert (report["n"], report["accuracy"]) == (quantized["test_n"], quantized["test_acc_int8"])


def test_find_lr_writes_plot(small_trashnet, tmp_path, capsys):
    assert cli_main(["train", "--data", str(small_trashnet), "--output-dir", str(tmp_path), "--find-lr", *TRAIN]) == 0
    assert "suggested --lr" in capsys.readouterr().out
    assert (tmp_path / "lr_find.png").stat().st_size > 1000


def test_damaged_checkpoint_is_a_clear_error(small_trashnet, tmp_path, capsys):
    (tmp_path / "checkpoint.pth").write_bytes(b"PK\x03\x04 not really a zip")
    code = cli_main(["export", "--checkpoint", str(tmp_path / "checkpoint.pth"), "--data", str(small_trashnet),
                     "--out", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err.strip()
    assert code == DataError.exit_code
    assert err.startswith("waste-sorter export: error:") and "damaged" in err and "\n" not in err
    code = cli_main(["train", "--data", str(small_trashnet), "--output-dir", str(tmp_path), "--resume", *TRAIN])
    assert code == DataError.exit_code and "damaged or foreign" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [[], ["--teacher", "t.pth", "--flatfield", "none"]])
def test_teacher_view_photo_without_a_teacher_or_a_board_is_refused(small_trashnet, tmp_path, capsys, extra):
    code = cli_main(["train", "--data", str(small_trashnet), "--output-dir", str(tmp_path), "--teacher-view", "photo",
                     *extra, *TRAIN])
    err = capsys.readouterr().err.strip()
    assert code == UsageError.exit_code and "--teacher-view photo needs --teacher" in err and "\n" not in err
    assert not (tmp_path / "split.json").exists(), "refused before anything is written"


def test_damaged_data_folder_is_a_clear_error(small_trashnet, tmp_path, capsys):
    assert cli_main(["train", "--data", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "o"), *TRAIN]) == 65
    assert "data folder does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken"
    for c in ("a", "b"):
        (broken / c).mkdir(parents=True)
        for i in range(6):
            (broken / c / f"{i}.jpg").write_bytes((small_trashnet / "glass").iterdir().__next__().read_bytes())
    (broken / "b" / "5.jpg").write_bytes(b"\xff\xd8 truncated")
    assert cli_main(["train", "--data", str(broken), "--output-dir", str(tmp_path / "o2"), "--val-frac", "0",
                     "--test-frac", "0", "--batch-size", "4", "--epochs", "1", "--no-amp"]) == 65
    assert "5.jpg: not a readable image" in capsys.readouterr().err


def test_checkpoint_weights_takes_the_better_of_raw_and_ema_on_validation():
    raw, ema = {"w": "raw"}, {"w": "ema"}
    ckpt = {"model": raw, "model_ema": ema, "history": [{"val_acc": 0.91, "val_acc_ema": 0.88}]}
    assert checkpoint_weights(ckpt) is raw
    assert checkpoint_weights(ckpt, "ema") is ema
    ckpt["history"].append({"val_acc": 0.90, "val_acc_ema": 0.90})
    assert checkpoint_weights(ckpt) is ema
    assert checkpoint_weights(ckpt, "raw") is raw
    assert checkpoint_weights({"model": raw, "model_ema": None}, "ema") is raw
    with pytest.raises(ValueError):
        checkpoint_weights(ckpt, "newest")


def test_train_on_val_trains_on_train_and_val_and_scores_nothing_on_them(small_trashnet, tmp_path, capsys):
    assert cli_main(["train", "--data", str(small_trashnet), "--output-dir", str(tmp_path), "--train-on-val",
                     *TRAIN]) == 0
    split = load_split(tmp_path / "split.json", small_trashnet)
    n_fit = len(split.files["train"]) + len(split.files["val"])
    assert f"{n_fit} train / 0 val photos" in capsys.readouterr().out
    ckpt = load_checkpoint(tmp_path / "checkpoint.pth")
    assert ckpt["args"]["train_on_val"] is True
    assert not any(k.startswith("val_") for k in ckpt["history"][-1])
    assert checkpoint_weights(ckpt) is ckpt["model_ema"]  # no validation figures: the EMA


TWO_EPOCHS = [*TRAIN[:TRAIN.index("--epochs")], "--epochs", "2", *TRAIN[TRAIN.index("--epochs") + 2:]]


def test_resume_refuses_changed_arguments(small_trashnet, tmp_path, capsys):
    saved = {"arch": "resnet34", "lr": 0.1, "batch_size": 8, "epochs": 2, "init": "scratch",
             "data": "elsewhere", "device": "cuda", "split": None, "teacher": None,
             "flatfield": "border", "relight_prob": 0.8, "camera_prob": 0.5,
             "textured_board_prob": 0.6}
    torch.save({"model": {}, "args": saved, "classes": [], "contract": "{}", "split_sha256": ""},
               tmp_path / "checkpoint.pth")
    changed = [*TWO_EPOCHS, "--lr", "0.05", "--init", "imagenet", "--device", "cpu"]  # these two don't count
    changed[changed.index("--batch-size") + 1] = "4"
    code = cli_main(["train", "--data", str(small_trashnet), "--output-dir", str(tmp_path), "--resume", *changed])
    err = capsys.readouterr().err.strip()
    assert code == DataError.exit_code and "\n" not in err
    assert "--resume: checkpoint was trained with lr=0.1, not 0.05; batch_size=8, not 4 (" in err


def test_resume_compares_teachers_as_a_list_and_reads_a_single_saved_teacher(tmp_path):
    from argparse import Namespace

    from export.train import resume_mismatches

    one, two = tmp_path / "t1.pth", tmp_path / "t2.pth"
    assert resume_mismatches({"teacher": str(one)}, Namespace(teacher=[one])) == []  # saved before ensembles
    assert resume_mismatches({"teacher": [str(one), str(two)]}, Namespace(teacher=[one, two])) == []
    assert resume_mismatches({"teacher": [str(one), str(two)]}, Namespace(teacher=[one])) != []
    assert resume_mismatches({"teacher": None}, Namespace(teacher=None)) == []
    # A checkpoint from before board normalisation was trained on photos as they are.
    assert resume_mismatches({}, Namespace(flatfield="border", relight_prob=0.8)) == [
        "flatfield=none, not border", "relight_prob=0.0, not 0.8"]
    assert resume_mismatches({}, Namespace(flatfield="none", relight_prob=0.0)) == []
    # ... and one from before --camera-prob without the camera's artefacts.
    assert resume_mismatches({"flatfield": "border"}, Namespace(flatfield="border", camera_prob=0.5)) == [
        "camera_prob=0.0, not 0.5"]


@pytest.mark.parametrize("damage", [{"epoch": "3"}, {"epoch": None}, {"epoch": 1.5}, {"history": "x"},
                                    {"rng_state": "junk"}, {"rng_state": torch.zeros(3)}])
def test_resuming_from_a_damaged_checkpoint_is_a_one_line_error_naming_it(tmp_path, damage):
    from export.checkpoints import resume

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict(),
            "epoch": 0, "history": [], "rng_state": torch.get_rng_state(), **damage}
    path = tmp_path / "checkpoint.pth"
    with pytest.raises(DataError, match="cannot resume from this checkpoint") as caught:
        resume(ckpt, path, torch.device("cpu"), model=model, ema=None, projector=None, optimizer=optimizer,
               scheduler=scheduler)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


@pytest.mark.parametrize("saved_args", [["arch", "resnet34"], None, "resnet34"])
def test_a_checkpoint_whose_args_are_no_table_is_a_one_line_error_naming_it(small_trashnet, tmp_path, capsys,
                                                                             saved_args):
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": {}, "args": saved_args, "classes": [], "contract": "{}", "split_sha256": ""}, path)
    with pytest.raises(DataError, match="damaged or foreign checkpoint"):
        load_checkpoint(path)
    code = cli_main(["train", "--data", str(small_trashnet), "--output-dir", str(tmp_path), "--resume", *TWO_EPOCHS])
    err = capsys.readouterr().err.strip()
    assert code == DataError.exit_code and "\n" not in err and str(path) in err


def test_an_ensemble_of_teachers_labels_with_the_mean_probability_and_concatenated_features():
    from export.models import build_model, forward_features
    from export.train import teacher_targets

    torch.manual_seed(0)
    a, b = (build_model("resnet34", 6, "scratch").eval() for _ in range(2))
    x = torch.randn(3, 3, 48, 64)
    (la, fa), (lb, fb) = forward_features(a, x), forward_features(b, x)
    probs, features = teacher_targets([a, b], x, temperature=2.0)
    expected = (torch.softmax(la / 2, 1) + torch.softmax(lb / 2, 1)) / 2
    assert torch.allclose(probs, expected, atol=1e-6) and not torch.allclose(probs, torch.softmax(la / 2, 1))
    assert torch.allclose(probs.sum(1), torch.ones(3))
    assert torch.equal(features, torch.cat([fa, fb], 1)) and features.shape == (3, 2 * fa.shape[1])


@pytest.mark.slow
def test_interrupted_and_resumed_training_equals_one_run(small_trashnet, tmp_path, capsys, monkeypatch):
    import export.train as train

    once, twice = tmp_path / "once", tmp_path / "twice"
    assert cli_main(["train", "--data", str(small_trashnet), "--output-dir", str(once), *TWO_EPOCHS]) == 0
    real_save = train.save_checkpoint

    def save_then_stop(state, path):  # Ctrl-C right after the first epoch's checkpoint
        real_save(state, path)
        if state["epoch"] == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "save_checkpoint", save_then_stop)
    assert cli_main(["train", "--data", str(small_trashnet), "--output-dir", str(twice), *TWO_EPOCHS]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert cli_main(["train", "--data", str(small_trashnet), "--output-dir", str(twice), "--resume",
                     "--init", "imagenet", *TWO_EPOCHS]) == 0  # "scratch" on resume: no download
    assert "at epoch 1" in capsys.readouterr().out
    a, b = load_checkpoint(once / "checkpoint.pth"), load_checkpoint(twice / "checkpoint.pth")
    for key in ("model", "model_ema"):
        assert a[key].keys() == b[key].keys()
        different = [k for k in a[key] if not torch.equal(a[key][k], b[key][k])]
        assert different == [], f"{key}: {different[:5]}"
    timeless = [{**h, "seconds": 0, "throughput": 0} for h in a["history"]]
    assert timeless == [{**h, "seconds": 0, "throughput": 0} for h in b["history"]]


def test_foreign_weights_and_another_split_are_clear_errors(small_trashnet, tmp_path, capsys):
    split = make_split(small_trashnet, val_frac=0.25, test_frac=0.25, seed=0)
    split.save(tmp_path / "split.json")
    ckpt = {"model": {"fc.weight": torch.zeros(6, 512)}, "args": {"arch": "resnet34"}, "classes": list(split.classes),
            "contract": ModelContract(split.classes, 64, 48).to_json(), "split_sha256": split.sha256}
    path = tmp_path / "checkpoint.pth"
    export = ["export", "--checkpoint", str(path), "--data", str(small_trashnet), "--out", str(tmp_path / "m.onnx")]

    def error(argv) -> str:
        assert cli_main(argv) == DataError.exit_code
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after tqdm's progress bars
        assert err.startswith(f"waste-sorter {argv[0]}: error: ") and len(err) < 400  # the whole error
        return err

    torch.save(ckpt, path)
    assert "weights do not fit this model (Error(s) in loading state_dict for ResNet: Missing key" in error(export)
    assert "teacher weights do not fit" in error(["train", "--data", str(small_trashnet), "--output-dir",
                                                  str(tmp_path / "o"), "--split", str(tmp_path / "split.json"),
                                                  "--teacher", str(path), *TRAIN])
    torch.save({**ckpt, "args": {}}, path)
    assert "weights do not fit this model (no 'arch')" in error(export)
    torch.save({**ckpt, "split_sha256": "0" * 64}, path)
    assert error(export).endswith(f"{tmp_path / 'split.json'}: not the split this checkpoint was trained on")
