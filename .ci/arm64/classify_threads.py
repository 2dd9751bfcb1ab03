"""The shipped model through device.classifier.Classifier at several thread counts, on the
self-test picture and a few of the model's test photos; one JSON file out. Run it on the x86
host and in the arm64 rootfs, then compare:

    python .ci/arm64/classify_threads.py --threads auto 1 2 4 --out x86.json
    .ci/arm64/enter.sh --cpu cortex-a72 python .ci/arm64/classify_threads.py --threads auto 1 2 4 --out a72.json
    python .ci/arm64/classify_threads.py --compare x86.json a72.json a76.json

Each thread count loads its own Classifier (the start-up self-test included) and classifies
every picture alone (batch 1), as the sorter does. Timings under qemu mean little.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

PER_CLASS = 2  # test photos per class


def pictures(trashnet: Path) -> list[tuple[str, object]]:
    from device import selftest
    from device.contract import read_rgb
    out: list[tuple[str, object]] = [("selftest:" + selftest.REFERENCE, selftest.reference_image())]
    split = json.loads((REPO / "device" / "model" / "split.json").read_text())
    if not trashnet.is_dir():
        print(f"note: {trashnet} is missing: the self-test picture only", file=sys.stderr)
        return out
    taken: dict[int, int] = {}
    for rel, label in split["test"]:
        if taken.get(label, 0) < PER_CLASS:
            taken[label] = taken.get(label, 0) + 1
            out.append((rel, read_rgb(str(trashnet / rel))))
    return out


def run(threads: list[str], trashnet: Path) -> dict:
    import onnxruntime as ort
    from device.classifier import Classifier, available_cores
    pics = pictures(trashnet)
    result = {"machine": platform.machine(), "cpu": os.environ.get("ARM64_CPU", "host"),
              "onnxruntime": ort.__version__, "available_cores": available_cores(),
              "pictures": [name for name, _ in pics], "runs": {}}
    for t in threads:
        start = time.monotonic()
        clf = Classifier(threads="auto" if t == "auto" else int(t))
        load_s = time.monotonic() - start
        probs, times = [], []
        for _, image in pics:
            start = time.monotonic()
            probs.append([float(p) for p in clf.probabilities([image])[0]])
            times.append(time.monotonic() - start)
        labels = [clf.classes[max(range(len(p)), key=p.__getitem__)] for p in probs]
        result["runs"][t] = {"threads": clf.threads, "load_s": round(load_s, 2),
                             "median_s": round(sorted(times)[len(times) // 2], 3),
                             "labels": labels, "probabilities": probs}
        clf.close()
        print(f"{result['cpu']:11s} threads={t:4s} ({clf.threads}) loaded in {load_s:.1f} s, "
              f"median {result['runs'][t]['median_s']:.3f} s/picture, labels {labels}", flush=True)
    return result


def compare(paths: list[Path]) -> int:
    reference = json.loads(paths[0].read_text())
    ref_run = next(iter(reference["runs"].values()))
    ref_labels, ref_probs = ref_run["labels"], ref_run["probabilities"]
    print(f"reference: {paths[0]} ({reference['machine']}, onnxruntime {reference['onnxruntime']}, "
          f"{len(ref_labels)} pictures)")
    bad = 0
    for path in paths:
        data = json.loads(path.read_text())
        if data["pictures"] != reference["pictures"]:
            print(f"{path}: other pictures than the reference")
            bad += 1
            continue
        for t, r in data["runs"].items():
            same = sum(a == b for a, b in zip(r["labels"], ref_labels))
            diff = max(abs(a - b) for pa, pb in zip(r["probabilities"], ref_probs) for a, b in zip(pa, pb))
            print(f"{data['machine']:8s} {data['cpu']:11s} threads={t:4s} ({r['threads']}): "
                  f"labels {same}/{len(ref_labels)} same, max |prob diff| {diff:.4f}, "
                  f"load {r['load_s']:.1f} s, median {r['median_s'] * 1000:.0f} ms/picture")
            bad += same != len(ref_labels)
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", nargs="+", default=["auto", "1", "2", "4"])
    ap.add_argument("--trashnet", type=Path, default=REPO.parent / "shared" / "datasets" / "trashnet")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--compare", nargs="+", type=Path, help="reference JSON first")
    args = ap.parse_args()
    if args.compare:
        return compare(args.compare)
    result = run(args.threads, args.trashnet)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
