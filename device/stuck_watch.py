"""Items left on the board after they were sorted: a jammed flap, an item the actuator could not move.

A sorted item that is still on the board ``presence.stuck_warn_s`` after its record is warned
about once, and the sorter reads "stuck" (status file, systemd STATUS, indicator) until the
board clears or changes; the next item is sorted only then.
"""

from __future__ import annotations

import logging

from device.actuators import TIME_TOLERANCE_S

log = logging.getLogger(__name__)

#: Presence events after which the board holds no sorted item any more.
BOARD_CHANGED = ("arrived", "departed", "learned", "left")


class StuckWatch:
    def __init__(self, stuck_warn_s: float):
        """``stuck_warn_s``: how long (seconds of source time) a sorted item may stay; 0 = never warn."""
        self.stuck_warn_s = stuck_warn_s
        self.stuck = False
        self.events = 0  # stuck spells since start (the status file has it)
        self._sorted: tuple[int, str, float] | None = None  # (item, bin, source time s)

    def sorted(self, number: int, bin_name: str, t: float) -> None:
        """Item ``number`` went to ``bin_name`` at ``t``: it should leave the board now."""
        self._sorted = (number, bin_name, t)

    def forget(self) -> None:
        """Nothing sorted to watch (an item that left by itself, or a run that stops)."""
        self._sorted = None

    def board_event(self, event: str, t: float) -> str:
        """Presence's ``event`` at ``t``: "sorting again" when it ends a stuck spell, "stuck:
        ..." when the sorted item has now overstayed (said once), else ""."""
        if event in BOARD_CHANGED:
            was_stuck, self.stuck, self._sorted = self.stuck, False, None
            if was_stuck:
                log.info("board %s: sorting again", "changed" if event == "arrived" else "cleared")
                return "sorting again"
            return ""
        if self._sorted is None or self.stuck:
            return ""
        number, bin_name, sorted_at_s = self._sorted
        if self.stuck_warn_s > 0 and t - sorted_at_s + TIME_TOLERANCE_S >= self.stuck_warn_s:
            self.stuck = True
            self.events += 1
            log.warning("item %d is still on the board %.0f s after it was sorted to %s: check that bin's "
                        "actuator and clear the board (the next item is sorted once it clears or changes)",
                        number, t - sorted_at_s, bin_name)
            return f"stuck: item {number} still on the board"
        return ""
