"""Load check of `waste-sorter mqtt` (README, "A fleet on one MQTT broker"): N records written to
the sort log while the broker is down, then the broker started; prints how long until a
subscriber has every one of them, the publisher's memory (peak resident set, VmHWM) and the
repeats. Run with several N to see that memory does not grow with the backlog:

    .venv/bin/python tests/bench/mqtt_load.py              # N = 1000 and 10000
    .venv/bin/python tests/bench/mqtt_load.py --records 10000

Needs Debian's mosquitto (`make test` installs it). Real processes on this machine: the
publisher with its default intervals, a Mosquitto broker, a paho subscriber in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the broker helper

from helpers import event  # noqa: E402
from mqtt_broker import Mosquitto, PublisherProcess, Subscriber  # noqa: E402



def memory_kib(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0])
    return values


def write_log(path: Path, records: int, max_bytes: int) -> None:
    """``records`` sort records as the sorter's SortLog lays them out, rotated at ``max_bytes``
    (``sort.jsonl.N`` oldest ... ``sort.jsonl`` newest), written without its fsync per record:
    what is measured is the publisher, not this machine's disk."""
    now = time.time()
    files: list[list[str]] = [[]]
    size = 0
    for item in range(1, records + 1):
        line = event(item, t=now).to_json() + "\n"
        if size and size + len(line) > max_bytes:
            files.append([])
            size = 0
        files[-1].append(line)
        size += len(line)
    for age, lines in enumerate(reversed(files)):  # the newest first: sort.jsonl, then .1, .2 ...
        (path if age == 0 else path.with_name(f"{path.name}.{age}")).write_text("".join(lines))


def cpu_s(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far (seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(records: int, folder: Path, *, max_bytes: int) -> dict[str, float]:
    broker = Mosquitto(folder / "broker")
    broker.start()
    sub = Subscriber(broker, "waste-sorter/bench/record")  # a persistent session, saved when the broker stops
    broker.stop()
    config = broker.config(device_id="bench", position_file=str(folder / "position.json"),
                           reconnect_min_s=0.5, reconnect_max_s=2.0)
    pub = PublisherProcess(folder, config)  # the defaults of the service but for the 2 s backoff ceiling
    until = time.monotonic() + 60
    while not any("connection refused" in line for line in pub.lines()):  # up, and trying
        assert time.monotonic() < until, pub.lines()
        time.sleep(0.1)
    started = time.monotonic()
    write_log(folder / "sort.jsonl", records, max_bytes)
    write_s = time.monotonic() - started
    before = memory_kib(pub.process.pid)
    cpu_before = cpu_s(pub.process.pid)
    rotated = len(list(folder.glob("sort.jsonl.*")))
    broker.start()
    up = time.monotonic()
    seen: set[int] = set()
    counted = [0]

    def all_seen() -> bool:  # parse each message once (not all of them at every look)
        with sub.lock:
            new = sub.messages[counted[0]:]
        counted[0] += len(new)
        seen.update(json.loads(payload)["item"] for _, payload, _ in new)
        return len(seen) == records

    sub.wait_for(all_seen, timeout_s=600, what="every record")
    deliver_s = time.monotonic() - up
    after = memory_kib(pub.process.pid)
    cpu = cpu_s(pub.process.pid) - cpu_before
    got = [r["item"] for r in sub.records()]
    pub.terminate()
    sub.close()
    broker.kill()
    first_seen = list(dict.fromkeys(got))
    return {"records": records, "files": rotated + 1, "write_s": write_s, "deliver_s": deliver_s,
            "rate": records / deliver_s, "cpu_s": cpu, "rss_waiting_mib": before["VmRSS"] / 1024,
            "peak_mib": after["VmHWM"] / 1024, "repeats": len(got) - len(first_seen),
            "in_order": first_seen == list(range(1, records + 1))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", default="1000,10000", help="comma-separated backlog sizes (1000,10000)")
    parser.add_argument("--max-bytes", type=int, default=1_000_000, help="sort log rotation size (1 MB)")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("records  log files  written in  delivered in  records/s  publisher CPU  RSS waiting  peak RSS  repeats"
          "  in order")
    for n in (int(x) for x in args.records.split(",")):
        with tempfile.TemporaryDirectory() as folder:
            r = run(n, Path(folder), max_bytes=args.max_bytes)
        print(f"{r['records']:>7}  {r['files']:>9}  {r['write_s']:>8.1f} s  {r['deliver_s']:>10.1f} s  "
              f"{r['rate']:>9.0f}  {r['cpu_s']:>11.1f} s  {r['rss_waiting_mib']:>7.1f} MiB  {r['peak_mib']:>4.1f} MiB  "
              f"{r['repeats']:>7}  {'yes' if r['in_order'] else 'NO'}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
