"""Score a sort log against a rendered scene's truth file.

    waste-sorter score-scene --truth build/demo/scene.truth.json --log build/demo/sort.jsonl
    waste-sorter score-scene --truth T --log L --reference     # + the classifier on the same photos

A record belongs to the item on the board when it was written: from the item's arrival until
LATE_S after it was gone (a decision at departure comes ``clear_s`` after the board cleared),
never after the next arrival. A record written as ``settled`` after its item was gone is a
phantom (something took the item's place), as is every record outside an item's window.
Figures: items with exactly one record (and with none, with more), extra records, accuracy on
normal items (those without a per-item nuisance; a missing record counts as wrong), overexposed
items sent to the fallback bin with a reason, the fallback rate, and decision latency (record
time after the item came to rest, for items decided while they lay there). ``--reference``
classifies the same photos with the same model, laid on the scene's board under the light each
lay in without any nuisance (the accuracy the loop should reach on normal items), and the
scene's own frames of each normal item at rest (what the camera made of them, without the
loop's choices: a model unsure on this board moves with noise and compression either way).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from device.config import RoutingConfig, load_config
from device.errors import DataError
from device.sortlog import read_records

LATE_S = 1.0  # a record this long after its item was gone still belongs to it
FRAME_SLACK_S = 0.11  # about one frame


@dataclass
class SceneScore:
    items: int = 0
    exactly_one: int = 0
    without_record: int = 0
    with_several: int = 0
    records: int = 0
    extra_records: int = 0  # records beyond the first of an item, and phantoms
    normal_items: int = 0
    normal_correct: int = 0
    overexposed_items: int = 0
    overexposed_to_fallback: int = 0  # with a reason
    fallback_records: int = 0
    latencies_s: list[float] = field(default_factory=list)
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [items, exactly one, correct]
    reference_correct: int | None = None  # the classifier on the normal items' photos, still
    camera_reference_correct: int | None = None  # ... on the scene's own frames of them at rest

    @property
    def normal_accuracy(self) -> float:
        return self.normal_correct / self.normal_items if self.normal_items else 0.0

    @property
    def reference_accuracy(self) -> float | None:
        if self.reference_correct is None or not self.normal_items:
            return None
        return self.reference_correct / self.normal_items

    @property
    def camera_reference_accuracy(self) -> float | None:
        if self.camera_reference_correct is None or not self.normal_items:
            return None
        return self.camera_reference_correct / self.normal_items

    def latency_s(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) if self.latencies_s else 0.0

    def format(self) -> str:
        lines = [
            f"items with exactly one record: {self.exactly_one}/{self.items} "
            f"(none: {self.without_record}, several: {self.with_several}); extra records: {self.extra_records} "
            f"of {self.records}",
            f"accuracy on normal items: {100 * self.normal_accuracy:.1f}% ({self.normal_correct}/{self.normal_items})",
        ]
        if self.reference_accuracy is not None:
            lines.append(f"  the classifier on the same photos on this board: {100 * self.reference_accuracy:.1f}% "
                         f"({self.reference_correct}/{self.normal_items}); on the scene's own frames of them at "
                         f"rest: {100 * self.camera_reference_accuracy:.1f}% ({self.camera_reference_correct}/"
                         f"{self.normal_items})")
        lines += [
            f"overexposed items to the fallback bin with a reason: {self.overexposed_to_fallback}/"
            f"{self.overexposed_items}; fallback rate: {100 * self.fallback_records / max(1, self.records):.1f}% "
            f"of records",
            f"decision latency after the item came to rest: p50 {self.latency_s(50):.2f} s, "
            f"p95 {self.latency_s(95):.2f} s ({len(self.latencies_s)} items decided at rest)",
            "by kind (items, exactly one record, correct label): " + ", ".join(
                f"{kind} {n}/{one}/{ok}" for kind, (n, one, ok) in sorted(self.by_kind.items())),
        ]
        return "\n".join(lines)

    def to_json(self) -> dict:
        body = asdict(self)
        body.pop("latencies_s")
        body.update(normal_accuracy=self.normal_accuracy, reference_accuracy=self.reference_accuracy,
                    camera_reference_accuracy=self.camera_reference_accuracy,
                    latency_p50_s=self.latency_s(50), latency_p95_s=self.latency_s(95))
        return body


def went_to_fallback(record: dict, routing: RoutingConfig) -> bool:
    """Whether the record's item was sent to the fallback bin (not routed there by its class)."""
    label = record.get("label", "")
    return (not label or label not in routing.classes or record.get("confidence", 0.0) < routing.min_confidence
            or record.get("reason", "").startswith(("classifier failed", "stopping")))


def match(items: list[dict], records: list[dict]) -> tuple[list[list[dict]], list[dict]]:
    """Each item's records (in order) and the records that belong to no item."""
    ordered = sorted(range(len(items)), key=lambda i: items[i]["arrive_s"])
    per_item: list[list[dict]] = [[] for _ in items]
    phantoms = []
    for record in records:
        t = record["source_time"]
        owner = None
        for position, i in enumerate(ordered):
            item = items[i]
            end_s = item["leave_s"] + LATE_S
            if position + 1 < len(ordered):
                end_s = min(end_s, items[ordered[position + 1]]["arrive_s"])
            if item["arrive_s"] - 1e-6 <= t < end_s:
                if t <= item["leave_s"] + FRAME_SLACK_S or not record.get("settled", True):
                    owner = i
                break
        if owner is None:
            phantoms.append(record)
        else:
            per_item[owner].append(record)
    return per_item, phantoms


def score(truth: dict, records: list[dict], routing: RoutingConfig) -> SceneScore:
    items = truth["items"]
    per_item, phantoms = match(items, records)
    result = SceneScore(items=len(items), records=len(records))
    result.fallback_records = sum(went_to_fallback(r, routing) for r in records)
    result.extra_records = len(phantoms) + sum(max(0, len(rs) - 1) for rs in per_item)
    for item, rs in zip(items, per_item):
        kind = item["kind"]
        first = rs[0] if rs else None
        correct = first is not None and first.get("label") == item["label"]
        tally = result.by_kind.setdefault(kind, [0, 0, 0])
        tally[0] += 1
        tally[1] += len(rs) == 1
        tally[2] += correct
        result.exactly_one += len(rs) == 1
        result.without_record += not rs
        result.with_several += len(rs) > 1
        if kind == "normal":
            result.normal_items += 1
            result.normal_correct += correct
        if kind == "overexposed":
            result.overexposed_items += 1
            result.overexposed_to_fallback += (first is not None and went_to_fallback(first, routing)
                                               and bool(first.get("reason")))
        if first is not None and first.get("settled", True) and first["source_time"] <= item["remove_s"] + 1e-6:
            result.latencies_s.append(first["source_time"] - item["still_s"])
    return result


def reference_correct(truth: dict, photos: Path, model: Path | None) -> int:
    """How many normal items the classifier gets right on their photos laid on the scene's board
    under the light each lay in, without shake, noise or any other nuisance (one still frame
    each): what the loop should reach, since the light itself is the room's doing, not the
    loop's."""
    from device.classifier import Classifier
    from device.contract import read_rgb
    from device.scenes.render import SceneItem, still_view
    from device.scenes.stage import stage_of

    stage = stage_of(truth["stage"])
    normal = [item for item in truth["items"] if item["kind"] == "normal"]
    with Classifier(model) as classifier:
        return sum(classifier.classify([still_view(SceneItem(read_rgb(str(photos / item["source"])), item["label"]),
                                                   stage, item.get("light", 1.0))]).label == item["label"]
                   for item in normal)


def camera_reference_correct(truth: dict, video: Path, model: Path | None, frames: int = 3) -> int:
    """How many normal items the classifier gets right on the scene's own frames of them at rest
    (``frames`` in the middle of each rest, as the camera delivered them, shake and noise
    included): the same frames without the loop's choices, so the loop's own share of any
    difference to the clean reference shows."""
    from device.camera.opencv import VideoFileCamera
    from device.classifier import Classifier

    wanted: dict[int, dict] = {}
    for item in truth["items"]:
        if item["kind"] == "normal":
            middle = round((item["still_s"] + item["remove_s"]) / 2 * truth["fps"])
            for index in range(middle - frames // 2, middle - frames // 2 + frames):
                wanted[index] = item
    images: dict[int, list] = {}
    with VideoFileCamera(video) as camera:
        while (frame := camera.capture()) is not None:
            if frame.index in wanted:
                images.setdefault(wanted[frame.index]["item"], []).append(frame.image)
    normal = [item for item in truth["items"] if item["kind"] == "normal"]
    with Classifier(model) as classifier:
        return sum(item["item"] in images and classifier.classify(images[item["item"]]).label == item["label"]
                   for item in normal)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--truth", type=Path, required=True, help="the scene's truth JSON (from demo-scene)")
    p.add_argument("--log", type=Path, required=True, help="the sort log of the run on that scene")
    p.add_argument("--config", type=Path, help="the run's configuration (for its routing)")
    p.add_argument("--reference", action="store_true",
                   help="also classify the normal items' photos on the scene's board (no nuisance)")
    p.add_argument("--photos", type=Path, help="photo folder for --reference (default: the truth file's)")
    p.add_argument("--model", type=Path, help="model for --reference (default: the shipped one)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")


def main(args) -> int:
    from device import safe_json
    from device.safe_open import MiB, exists_entry, read_regular  # never a blocking open of a FIFO

    data = read_regular(args.truth, what="scene truth file", error=DataError, limit_bytes=64 * MiB)
    try:
        truth = safe_json.loads(data)
        truth["items"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{args.truth}: not a scene truth file ({exc})") from None
    if not exists_entry(args.log):
        raise DataError(f"{args.log}: sort log does not exist")
    routing = load_config(args.config).routing
    result = score(truth, list(read_records(args.log)), routing)
    if args.reference:
        if "stage" not in truth:
            raise DataError(f"{args.truth}: no stage recorded (not a photo scene): --reference needs one")
        result.reference_correct = reference_correct(truth, args.photos or Path(truth["photos"]), args.model)
        video = args.truth.with_name(truth.get("video", args.truth.name.replace(".truth.json", ".mp4")))
        result.camera_reference_correct = camera_reference_correct(truth, video, args.model)
    print(json.dumps(result.to_json(), indent=1) if args.json else result.format())
    return 0
