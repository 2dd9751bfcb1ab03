"""Data-parallel training: two processes under torchrun on the gloo backend (these CPUs), a
tiny EfficientNet-Lite0 from scratch on a few real TrashNet photos. The same weights on every
rank after every step, one writer, --resume after a stop with two and with one process, a
killed rank ending the run; the data loader's workers not changing the weights; the CUDA path
where a GPU is present."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")  # the train extra

from device.cli import main as cli_main  # noqa: E402
from export.loader import EpochBatches  # noqa: E402
from export.models import load_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: small_trashnet (helpers.PER_CLASS = 8 photos a class): 38 training photos, 19 a process, 4 steps an
#: epoch of 4 photos each (a global batch of 8).
TINY = ["--val-frac", "0.1", "--test-frac", "0.1", "--input-size", "64", "--batch-size", "4", "--no-amp",
        "--arch", "efficientnet_lite0", "--init", "scratch", "--opt", "adamw", "--lr", "1e-3",
        "--flatfield", "none", "--model-ema-decay", "0.9"]
STEPS_PER_EPOCH_2 = 4  # 19 // 4
NO_CUDA = not torch.cuda.is_available()


def torchrun(nproc: int, *args: str, timeout_s: float = 240) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node N -m export.train ARGS`` (a free port of its own)."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(nproc), "-m", "export.train", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, "OMP_NUM_THREADS": "1"})


def weights_log(path: Path, rank: int) -> list[tuple[str, str, str]]:
    """(epoch, step, sha256) per step of one rank's --debug-weights-log."""
    lines = Path(f"{path}.rank{rank}").read_text().split("\n")
    return [(e, s, sha) for e, s, _pid, sha in (line.split() for line in lines if line)]


def epoch_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"epoch"')]


@pytest.fixture(scope="module")
def two_process_run(small_trashnet, tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """Two epochs by two processes: (output dir, weights log, torchrun's result)."""
    tmp = tmp_path_factory.mktemp("ddp")
    out, log = tmp / "run", tmp / "weights"
    result = torchrun(2, "--data", str(small_trashnet), "--output-dir", str(out), "--epochs", "2",
                      "--debug-weights-log", str(log), *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, log, result


@pytest.mark.slow
def test_two_processes_keep_one_set_of_weights_and_rank_0_alone_writes(two_process_run):
    out, log, result = two_process_run
    rank0, rank1 = weights_log(log, 0), weights_log(log, 1)
    assert len(rank0) == 2 * STEPS_PER_EPOCH_2 and rank0 == rank1  # the same weights after every step
    assert len({sha for _, _, sha in rank0}) == len(rank0)  # and they moved at every step
    pids = {line.split()[2] for r in (0, 1) for line in Path(f"{log}.rank{r}").read_text().splitlines()}
    assert len(pids) == 2
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pth", "history.json", "split.json"]
    records = epoch_lines(result.stdout)
    assert [r["epoch"] for r in records] == [1, 2]  # printed once, by rank 0
    ckpt = load_checkpoint(out / "checkpoint.pth")
    assert ckpt["world_size"] == 2 and ckpt["epoch"] == 1
    assert [h["throughput"]["processes"] for h in ckpt["history"]] == [2, 2]
    assert all(h["throughput"]["images_per_s"]["student"] > 0 for h in ckpt["history"])
    assert ckpt["lr_scheduler"]["total_steps"] == 2 * STEPS_PER_EPOCH_2
    assert ckpt["optimizer"]["param_groups"][0]["max_lr"] == pytest.approx(1e-3 * 2 ** 0.5)  # AdamW: sqrt rule


@pytest.mark.slow
def test_resume_after_a_stop_with_two_processes_ends_where_one_run_would_and_one_process_carries_on(
        small_trashnet, two_process_run, tmp_path, capsys):
    once, _, _ = two_process_run
    stopped = tmp_path / "stopped"
    base = ["--data", str(small_trashnet), "--epochs", "2", *TINY]
    first = torchrun(2, "--output-dir", str(stopped), "--stop-after-epoch", "1", *base)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "stopped after epoch 1 of 2" in first.stdout
    assert load_checkpoint(stopped / "checkpoint.pth")["epoch"] == 0
    shutil.copytree(stopped, tmp_path / "alone")
    # two processes again: the weights of the run that never stopped, bit for bit
    second = torchrun(2, "--output-dir", str(stopped), "--resume", *base)
    assert second.returncode == 0, second.stderr[-3000:]
    a, b = load_checkpoint(once / "checkpoint.pth"), load_checkpoint(stopped / "checkpoint.pth")
    for key in ("model", "model_ema"):
        assert [k for k in a[key] if not torch.equal(a[key][k], b[key][k])] == [], key
    # one process from the two's checkpoint: its own global batch, the schedule carried on
    assert cli_main(["train", "--output-dir", str(tmp_path / "alone"), "--resume", *base]) == 0
    out = capsys.readouterr().out
    assert "trained by 2 processes, continued by 1 (9 steps an epoch from now on)" in out
    ckpt = load_checkpoint(tmp_path / "alone" / "checkpoint.pth")
    assert [h["throughput"]["processes"] for h in ckpt["history"]] == [2, 1] and ckpt["world_size"] == 1
    assert ckpt["lr_scheduler"]["last_epoch"] == ckpt["lr_scheduler"]["total_steps"] == 2 * 9
    assert ckpt["optimizer"]["param_groups"][0]["max_lr"] == pytest.approx(1e-3)


@pytest.mark.slow
def test_a_killed_rank_ends_every_rank_with_an_error_within_seconds(small_trashnet, tmp_path):
    log = tmp_path / "weights"
    run = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            "-m", "export.train", "--data", str(small_trashnet),
                            "--output-dir", str(tmp_path / "run"),
                            "--epochs", "500", "--dist-timeout-s", "30", "--debug-weights-log", str(log), *TINY],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 180
        rank1 = Path(f"{log}.rank1")
        while not (rank1.exists() and rank1.read_text().strip()):
            assert run.poll() is None and time.monotonic() < deadline, "training never started"
            time.sleep(0.2)
        pid = int(rank1.read_text().split()[2])
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        output, _ = run.communicate(timeout=90)
        ended_s = time.monotonic() - killed
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode != 0
    assert ended_s < 45, f"the run went on {ended_s:.0f} s after a rank died"
    # rank 0 says why it stopped in one line (torchrun's SIGTERM, or the peer it lost), no traceback
    rank0_errors = [line for line in output.splitlines() if "waste-sorter train: error: rank 0 of 2:" in line]
    assert len(rank0_errors) == 1, output[-3000:]
    assert not [line for line in output.splitlines() if line.startswith("[rank0]")], output[-3000:]
    assert f"pid: {pid}" in output or "rank      : 1" in output  # torchrun's summary names the dead rank


def test_torchruns_signal_after_a_rank_left_its_block_adds_no_traceback():
    """Once a rank's training block has ended (or failed, its one-line error about to print),
    torchrun's SIGTERM during the print or the interpreter's exit is ignored; before, it raised
    from the exit handlers and rank 0 printed a traceback beside its one line."""
    from export.distributed import Context, RankFailed

    def stopped(signum, _frame):
        raise RankFailed("stopped")

    before = signal.signal(signal.SIGTERM, stopped)
    try:
        with pytest.raises(RankFailed):
            os.kill(os.getpid(), signal.SIGTERM)  # inside a run's block: the one-line stop
        ctx = Context(world_size=2, rank=1)
        with pytest.raises(ValueError):
            with ctx:
                raise ValueError("a failure inside the block")
        os.kill(os.getpid(), signal.SIGTERM)  # after it: nothing raised
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.slow
def test_the_number_of_data_loader_workers_does_not_change_the_weights(small_trashnet, tmp_path, capsys):
    for workers in ("1", "2"):
        assert cli_main(["train", "--data", str(small_trashnet), "--output-dir", str(tmp_path / workers),
                         "--epochs", "1", "--workers", workers, *TINY, "--flatfield", "border", "--mixup", "0.5"]) == 0
    assert "images/s: student" in capsys.readouterr().out
    a, b = (load_checkpoint(tmp_path / w / "checkpoint.pth") for w in ("1", "2"))
    assert [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])] == []
    assert [h["throughput"]["workers"] for h in a["history"] + b["history"]] == [1, 2]


def test_each_rank_takes_its_own_share_of_an_epoch_in_whole_batches():
    ranks = [EpochBatches(39, 4, rank=r, world_size=2, seed=5) for r in (0, 1)]
    shares = []
    for epoch in (0, 1):
        for sampler in ranks:
            sampler.set_epoch(epoch)
        batches = [list(s) for s in ranks]
        assert [len(b) for b in batches] == [4, 4]  # 19 a rank: 4 whole batches each, the same number of steps
        assert all(key[:2] == (epoch, step) and len(key[2]) == 4 for b in batches for step, key in enumerate(b))
        seen = [i for b in batches for _, _, idx in b for i in idx]
        assert len(seen) == len(set(seen)) == 32
        shares.append(seen)
    assert shares[0] != shares[1]  # another order each epoch


def test_cuda_asked_for_without_a_gpu_is_one_line(small_trashnet, tmp_path, capsys):
    if not NO_CUDA:
        pytest.skip("a CUDA GPU is present: the error for its absence cannot happen here")
    assert cli_main(["train", "--data", str(small_trashnet), "--output-dir", str(tmp_path), "--device", "cuda",
                     *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("waste-sorter train: error: --device cuda: no CUDA GPU here") and "\n" not in err


@pytest.mark.parametrize("extra, message", [(["--sync-bn"], "--sync-bn needs GPUs"),
                                            (["--workers", "-1"], "--workers -1: must be 0 or more"),
                                            (["--stop-after-epoch", "0"], "must be at least 1")])
def test_bad_distributed_options_are_one_line(small_trashnet, tmp_path, capsys, extra, message):
    code = cli_main(["train", "--data", str(small_trashnet), "--output-dir", str(tmp_path), "--device", "cpu",
                     *TINY, *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err


@pytest.mark.skipif(NO_CUDA, reason="no CUDA GPU on this machine")
@pytest.mark.slow
def test_one_gpu_with_workers_and_bf16_writes_each_stage_throughput(small_trashnet, tmp_path):
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    gpu = ["--device", "cuda", "--workers", "2", *[a for a in TINY if a != "--no-amp"]]
    assert cli_main(["train", "--data", str(small_trashnet), "--output-dir", str(teacher), "--epochs", "1", *gpu]) == 0
    assert cli_main(["train", "--data", str(small_trashnet), "--output-dir", str(student), "--epochs", "2",
                     "--split", str(teacher / "split.json"), "--teacher", str(teacher / "checkpoint.pth"), *gpu]) == 0
    history = load_checkpoint(student / "checkpoint.pth")["history"]
    assert all(set(h["throughput"]["images_per_s"]) == {"student", "teachers", "data"} for h in history)
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in history)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="fewer than two CUDA GPUs on this machine")
@pytest.mark.slow
def test_two_gpus_under_torchrun_on_nccl_keep_one_set_of_weights(small_trashnet, tmp_path):
    log = tmp_path / "weights"
    result = torchrun(2, "--data", str(small_trashnet), "--output-dir", str(tmp_path / "run"), "--epochs", "1",
                      "--device", "cuda", "--sync-bn", "--debug-weights-log", str(log), *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert weights_log(log, 0) == weights_log(log, 1)
