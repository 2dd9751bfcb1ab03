"""`waste-sorter mqtt` against a real Mosquitto: every record of the sort log delivered, in
order, with the broker up, down at start, and killed and restarted mid-run (compared with the
log: none missing, repeats only across a reconnect); retained state, stats and availability
right after each; the last will when the publisher is killed."""

from __future__ import annotations

import json
import threading
import time

from helpers import event
from mqtt_broker import PublisherProcess, Subscriber, broker, retained  # noqa: F401 - broker is a fixture

from device.mqtt_publisher import record_id
from device.runtime_status import RuntimeStatus, write_runtime_status
from device.sortlog import SortLog, read_records, utc_iso

DEVICE = "bin-1"
BASE = f"waste-sorter/{DEVICE}"


def write(log: SortLog, first: int, count: int, *, pause_s: float = 0.0) -> None:
    for item in range(first, first + count):
        log.append(event(item, t=time.time(), label="glass" if item % 3 else "trash",
                         bin_="glass" if item % 3 else "landfill", reason="" if item % 5 else "low confidence"))
        if pause_s:
            time.sleep(pause_s)


def log_ids(path) -> list[str]:
    return [record_id(r, DEVICE) for r in read_records(path)]


def received_ids(sub: Subscriber) -> list[str]:
    return [r["record_id"] for r in sub.records()]


def first_seen(ids: list[str]) -> list[str]:
    seen: set[str] = set()
    return [i for i in ids if not (i in seen or seen.add(i))]


def publisher(tmp_path, broker, *extra, **mqtt) -> PublisherProcess:
    config = broker.config(device_id=DEVICE, position_file=str(tmp_path / "position.json"), **mqtt)
    return PublisherProcess(tmp_path, config, *extra)


def persistent_subscriber(broker) -> Subscriber:
    """A subscriber whose session the broker has saved to disk (stopped cleanly and started
    again): a broker killed later still queues records for it while it reconnects."""
    sub = Subscriber(broker, f"{BASE}/#")
    broker.stop()
    broker.start()
    sub.wait_for(lambda: sub.client.is_connected(), what="the subscriber back")
    time.sleep(0.2)
    return sub


def test_records_delivered_in_order_across_rotations_then_offline_on_stop(tmp_path, broker):
    log_path = tmp_path / "sort.jsonl"
    sub = Subscriber(broker, f"{BASE}/#", clean=True)
    with SortLog(log_path, max_bytes=2_000, keep=20) as log:
        write(log, 1, 5)
        pub = publisher(tmp_path, broker)
        sub.wait_for(lambda: len(sub.records()) == 5, what="the first 5 records")
        write(log, 6, 25)  # about 5 records a file: rotated several times
    assert len(list(tmp_path.glob("sort.jsonl.*"))) >= 4
    sub.wait_for(lambda: len(sub.records()) == 30, what="30 records")
    assert received_ids(sub) == log_ids(log_path)  # all, in order, none twice
    record = sub.records()[0]
    assert record["device_id"] == DEVICE and record["item"] == 1 and record["label"] == "glass"
    assert retained(broker, f"{BASE}/availability") == {f"{BASE}/availability": "online"}
    sub.wait_for(lambda: json.loads(sub.on("/stats")[-1])["items_today"] == 30, what="stats of 30 items")
    stats = json.loads(sub.on("/stats")[-1])
    assert stats["bins"] == {"paper": 0, "glass": 20, "containers": 0, "landfill": 10}
    assert stats["classes"] == {"glass": 20, "trash": 10}
    assert stats["fallback_rate"] == round(6 / 30, 4) and stats["last"]["item"] == 30
    assert pub.terminate() == 0
    assert retained(broker, f"{BASE}/availability")[f"{BASE}/availability"] == "offline"
    # started again: nothing sent twice, new records follow, the counts go on from the saved ones
    pub = publisher(tmp_path, broker)
    with SortLog(log_path, max_bytes=2_000, keep=20) as log:
        write(log, 31, 3)
    sub.wait_for(lambda: len(sub.records()) >= 33, what="3 more records")
    time.sleep(0.3)
    assert received_ids(sub) == log_ids(log_path)
    sub.wait_for(lambda: json.loads(sub.on("/stats")[-1])["items_today"] == 33, what="stats of 33 items")
    pub.terminate()
    sub.close()
    assert not [line for line in pub.lines() if "Traceback" in line or "WARNING" in line]


def test_broker_down_at_start_then_every_record_once_it_is_up(tmp_path, broker):
    log_path = tmp_path / "sort.jsonl"
    sub = persistent_subscriber(broker)
    broker.stop()
    pub = publisher(tmp_path, broker)
    with SortLog(log_path) as log:
        write(log, 1, 40)
    pub.wait_for_line("connection refused")
    time.sleep(1.0)  # several more tries at 0.1-0.5 s
    refused = [line for line in pub.lines() if "connection refused" in line]
    assert len(refused) == 1 and f"broker 127.0.0.1:{broker.port}" in refused[0], pub.lines()
    assert not (tmp_path / "position.json").exists()  # nothing acknowledged, nothing saved
    broker.start()
    sub.wait_for(lambda: len(first_seen(received_ids(sub))) == 40, what="40 records")
    assert first_seen(received_ids(sub)) == log_ids(log_path)
    assert retained(broker, f"{BASE}/availability") == {f"{BASE}/availability": "online"}
    pub.terminate()
    sub.close()
    assert not [line for line in pub.lines() if "Traceback" in line]


def test_broker_killed_and_restarted_mid_run_loses_nothing(tmp_path, broker):
    log_path = tmp_path / "sort.jsonl"
    sub = persistent_subscriber(broker)
    pub = publisher(tmp_path, broker)
    sub.wait_for(lambda: sub.on("/availability")[-1:] == ["online"], what="online")
    status = tmp_path / "status.json"
    write_runtime_status(status, RuntimeStatus(updated_utc=utc_iso(), started_utc=utc_iso(), state="empty"))
    with SortLog(log_path, max_bytes=5_000, keep=50) as log:
        writer = threading.Thread(target=write, args=(log, 1, 150), kwargs={"pause_s": 0.01})
        writer.start()
        sub.wait_for(lambda: len(sub.records()) >= 30, what="30 records")
        broker.kill()
        time.sleep(0.5)  # records written meanwhile wait in the log, not in the publisher
        write_runtime_status(status, RuntimeStatus(updated_utc=utc_iso(), started_utc=utc_iso(), state="stuck"))
        broker.start()
        writer.join()
    expected = log_ids(log_path)
    sub.wait_for(lambda: len(first_seen(received_ids(sub))) == len(expected), timeout_s=60, what="every record")
    got = received_ids(sub)
    assert first_seen(got) == expected  # none missing, order kept
    repeats = len(got) - len(expected)
    assert repeats <= 100 + 20  # at most what was in flight at the kill (and what the broker had saved)
    # retained state right after the restart: a broker that lost it hears it again
    state = retained(broker, f"{BASE}/#")
    assert state[f"{BASE}/availability"] == "online"
    assert json.loads(state[f"{BASE}/status"])["state"] == "stuck"
    assert json.loads(state[f"{BASE}/status"])["faults"] == ["stuck"]
    sub.wait_for(lambda: json.loads(retained(broker, f"{BASE}/stats")[f"{BASE}/stats"])["items_today"] == 150,
                 what="stats of all 150 items")
    lost = [line for line in pub.lines() if "connection lost" in line]
    assert len(lost) == 1, pub.lines()
    assert not [line for line in pub.lines() if "Traceback" in line]
    pub.terminate()
    sub.close()


def test_last_will_says_offline_when_the_publisher_is_killed(tmp_path, broker):
    pub = publisher(tmp_path, broker)
    sub = Subscriber(broker, f"{BASE}/availability", clean=True)
    sub.wait_for(lambda: sub.on("/availability")[-1:] == ["online"], what="online")
    pub.kill()  # SIGKILL: no goodbye, the broker sends the will
    sub.wait_for(lambda: sub.on("/availability")[-1:] == ["offline"], what="the last will")
    assert retained(broker, f"{BASE}/availability") == {f"{BASE}/availability": "offline"}
    sub.close()


def test_state_and_faults_follow_the_status_file(tmp_path, broker):
    status = tmp_path / "status.json"
    write_runtime_status(status, RuntimeStatus(updated_utc=utc_iso(), started_utc=utc_iso(), state="learning"))
    pub = publisher(tmp_path, broker)
    sub = Subscriber(broker, f"{BASE}/status", clean=True)

    def last() -> dict:
        return json.loads(sub.on("/status")[-1]) if sub.on("/status") else {}

    sub.wait_for(lambda: last().get("state") == "learning", what="learning")
    assert last()["faults"] == [] and last()["problem"] is False
    write_runtime_status(status, RuntimeStatus(updated_utc=utc_iso(), started_utc=utc_iso(), state="empty",
                                               log_pending=3))
    sub.wait_for(lambda: last().get("state") == "ready", what="ready")
    assert last()["faults"] == ["disk_full"] and last()["problem"] is True
    write_runtime_status(status, RuntimeStatus(updated_utc="2000-01-01T00:00:00Z", started_utc=utc_iso(),
                                               state="empty"))
    sub.wait_for(lambda: last().get("faults") == ["camera_stopped"], what="a stale status file")
    status.unlink()
    sub.wait_for(lambda: last().get("faults") == ["not_running"], what="no status file")
    assert last()["state"] == "stopped"
    pub.terminate()
    sub.close()
