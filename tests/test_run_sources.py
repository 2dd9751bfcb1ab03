"""What `waste-sorter run` does with each kind of source it is given, and the id each record
carries: the simulated camera runs as calibrate's does; a folder of photos of items (no empty
board ever) is refused with one line saying what a source must show; every record has a
``record_id`` unique across runs and sorters, beside its per-run item number."""

from __future__ import annotations

import json

import cv2
import pytest

from device.cli import main as cli_main
from device.commands.demo_scene import make_board
from device.sortlog import read_records
from helpers import BLUE, CONFIG, GREEN, RED, item_on


pytestmark = pytest.mark.usefixtures("own_signal_handlers")  # main() installs the sorter's handlers


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli_main(["run", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_sim_runs_as_for_calibrate(config_path, colour_model_path, tmp_path, capsys):
    """The simulated camera films an empty board: learned, nothing sorted, a clean end."""
    code, out, err = run(capsys, "--config", config_path, "--model", colour_model_path, "--source", "sim:frames=45",
                         "--log", tmp_path / "sort.jsonl")
    assert code == 0, err
    assert out.startswith("0 item(s) in 1.5 s of source, 45 frames")


def test_sim_options_are_checked_like_calibrates(config_path, colour_model_path, tmp_path, capsys):
    code, out, err = run(capsys, "--config", config_path, "--model", colour_model_path, "--source", "sim:fog=1",
                         "--log", tmp_path / "sort.jsonl")
    assert code == 2 and out == ""
    assert err == ("waste-sorter run: error: --source: camera source 'sim:fog=1': unknown option 'fog' "
                   "(use light, glare, tint, seed, delay, frames, marks)\n")


def test_a_folder_of_photos_of_items_is_refused_with_what_a_source_must_show(config_path, colour_model_path,
                                                                              tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, colour in enumerate((RED, GREEN, BLUE, RED)):  # each its own item on its own board
        cv2.imwrite(str(photos / f"{i}.png"), cv2.cvtColor(item_on(make_board(seed=i + 2), colour), cv2.COLOR_RGB2BGR))
    code, out, err = run(capsys, "--config", config_path, "--model", colour_model_path, "--source", photos,
                         "--log", tmp_path / "sort.jsonl")
    assert code == 65 and out == "" and err.count("\n") == 1
    assert err.startswith(f"waste-sorter run: error: camera source '{photos}': sorted nothing, the board was "
                          f"never learned: its 4 frames never showed the empty board still")
    assert "`waste-sorter evaluate --data FOLDER`" in err


def test_every_record_has_an_id_unique_across_runs(two_item_scene, config_path, colour_model_path, tmp_path,
                                                   capsys):
    log = tmp_path / "sort.jsonl"
    config_path.write_text(CONFIG + '\n[device]\nid = "hall-2"\n')
    for _ in range(2):  # the same scene twice into one log: item numbers restart, ids do not
        code, _out, err = run(capsys, "--config", config_path, "--model", colour_model_path,
                              "--source", two_item_scene[0], "--log", log)
        assert code == 0, err
    records = list(read_records(log))
    assert [r["item"] for r in records] == [1, 2, 1, 2]
    ids = [r["record_id"] for r in records]
    assert len(set(ids)) == 4 and all(isinstance(i, str) for i in ids)
    assert {r["device_id"] for r in records} == {"hall-2"}
    first_run, second_run = records[0]["run_id"], records[2]["run_id"]
    assert first_run != second_run and records[1]["run_id"] == first_run
    assert ids[:2] == [f"hall-2-{first_run}-1", f"hall-2-{first_run}-2"]
    assert json.loads(log.read_text().splitlines()[0])["record_id"] == ids[0]


def test_without_a_device_id_the_record_names_the_host(two_item_scene, config_path, colour_model_path, tmp_path,
                                                       capsys):
    import socket

    log = tmp_path / "sort.jsonl"
    code, _out, err = run(capsys, "--config", config_path, "--model", colour_model_path, "--source", two_item_scene[0],
                          "--log", log, "--max-items", "1")
    assert code == 0, err
    (record,) = read_records(log)
    assert record["device_id"] and record["device_id"] in socket.gethostname().replace(" ", "_")
    assert record["record_id"] == f"{record['device_id']}-{record['run_id']}-1"
