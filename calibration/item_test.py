"""Step 7 of ``waste-sorter calibrate --test-item``: wait for an item to settle on the new
calibration's board, then show what the gate and the classifier make of it, with the sorter's
own gate, presence detector, frame choice (:mod:`device.item_frames`) and classifier."""

from __future__ import annotations

from calibration.console import pause, say
from device.classifier import Classifier
from device.errors import ModelError
from device.gate import ExposureGate
from device.item_frames import DECIDING_EVENTS, ItemFrames, belongs_to_item, observe
from device.presence import PresenceDetector

#: How the classification line ends, by how the item's wait ended.
HOW_IT_LAY = {"settled": "", "unsettled": ", although it never lay still",
              "left": ", although it left before it lay still"}


def run_item_test(args, camera, config, calibration, board_image, max_frames: int = 300) -> None:
    """Step 7: classify the next item placed on the board, or say why it could not be."""
    try:
        classifier = Classifier(config.model.path or None, threads=config.model.threads)
    except ModelError as exc:
        say(f"7. Test item: skipped, the model cannot be loaded: {exc}")
        return
    with classifier:
        gate = ExposureGate(calibration.gate, calibration.board, board_image=board_image)
        presence = PresenceDetector(config.presence, reference=board_image)
        pause(args, "7. Test item: place one item on the board.")
        item, decision = _wait_for_item(camera, gate, presence, config.model.frames_per_item, max_frames)
        if decision is None:
            say(f"   no item settled in {max_frames} frames: check the board and the light")
            return
        frames = [slot.image for slot in item.for_decision(decision == "settled")]
        if not frames:
            say(f"   the item could not be classified: {item.no_frame_reason()}; check the light")
            return
        try:
            prediction = classifier.classify(frames)
        except ModelError as exc:
            say(f"   the model failed on the item: {exc}")
            return
        top = ", ".join(f"{name} {p:.2f}" for name, p in prediction.top3)
        say(f"   classified as {prediction.label} ({top}) from {prediction.frames} frame(s)" + HOW_IT_LAY[decision])


def _wait_for_item(camera, gate: ExposureGate, presence: PresenceDetector, keep: int,
                   max_frames: int) -> tuple[ItemFrames, str | None]:
    """The frames of the first item presence decides on, and its deciding event (None when
    none was decided within ``max_frames`` or the source ended); rejected frames are said."""
    item = ItemFrames(keep=keep)
    for _ in range(max_frames):
        frame = camera.capture()
        if frame is None:
            break
        verdict, update = observe(gate, presence, frame.image, frame.timestamp_s)
        if not verdict.accepted:
            say(f"   frame {frame.index}: rejected ({verdict.reason})")
        if update is None:  # not an image presence can look at
            continue
        if update.event in ("arrived", "departed", "passed"):
            item = ItemFrames(keep=keep)
        if belongs_to_item(update):
            item.add(frame.image, verdict, update)
        if update.event in DECIDING_EVENTS:
            return item, update.event
    return item, None
