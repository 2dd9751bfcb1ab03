"""What the person at the bin sees and hears: a ready light, a light per bin and a buzzer.

- **ready light** (``indicator.ready_pin``): on = drop the next item (the board is empty and
  armed); blinking = deciding (from an item's arrival to its decision); off = wait (the item is
  decided and being sorted, an item is stuck, the board is being learned, starting, stopped).
- **bin lights** (``bins.NAME.light_pin``): the light of the bin an item was routed to, for
  ``show_ms`` (the next item's routing moves it).
- **buzzer** (``indicator.buzzer_pin``): a short beep for a fallback decision, a long one when
  an item is stuck.

Any of them may be absent. The loop drives it (see :class:`Indicator`): ``show_state`` and
``update`` on every frame, ``arrived`` and ``routed`` at an item's start and decision, with
times in seconds passed in (the monotonic clock live, the frame's time in a replay). The blink
phase is computed from those times, never by gpiozero's ``blink()`` threads, so a replay lights
identically at any speed and tests need no sleeps; a pin is written only when its value
changes, so a frame costs a few comparisons. :meth:`Indicator.safe_all` (signal handlers, error
paths, ``close()``) turns every output off and latches: from then on nothing turns on again.

Set-up failures are errors like the actuators' (a wrong pin: ConfigError; a busy line:
ActuatorError, exit 69). A write failing while sorting is logged once and that output is left
alone: a dead light must not stop sorting.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from dataclasses import dataclass

from device.actuators import TIME_TOLERANCE_S, gpio_setup_error, is_gpio_failure
from device.config import BinConfig, IndicatorConfig
from device.errors import first_line

log = logging.getLogger(__name__)

#: States with an item on the board: the ready light blinks until the item is decided, then is
#: off until the board is empty again.
ITEM_STATES = ("occupied", "deciding", "settled")
#: Entering one of these from any other state means a new, undecided item.
ARRIVAL_STATES = ("occupied", "deciding")
#: What the ready light says in the other states.
MEANINGS = {"empty": "drop the next item", "stuck": "stuck: clear the board", "learning": "learning the board",
            "starting": "starting", "stopped": "stopped"}

HISTORY_LENGTH = 256  # changes of what the person sees, kept for the demo and for tests


@dataclass(frozen=True)
class IndicatorView:
    """What the person at the bin sees at one moment (blinking is one look, not its phase)."""

    ready: str  # "on", "blinking" or "off"; "" without a ready light
    meaning: str  # what the ready light says ("drop the next item", "deciding", ...)
    bin_light: str  # the bin whose light is on; "" when none is
    bin_lights: bool  # whether there are bin lights at all
    buzzer: bool | None  # sounding; None without a buzzer
    failed: tuple[str, ...] = ()  # outputs a GPIO error put out of use

    def describe(self) -> str:
        """One line, e.g. ``ready light blinking (deciding), paper light on, buzzer quiet``;
        "" when there is no indicator."""
        parts = []
        if self.ready:
            parts.append(f"ready light {self.ready} ({self.meaning})")
        if self.bin_lights:
            parts.append(f"{self.bin_light} light on" if self.bin_light else "bin lights off")
        if self.buzzer is not None:
            parts.append("buzzer sounding" if self.buzzer else "buzzer quiet")
        if self.failed:
            parts.append(f"FAILED: {', '.join(self.failed)}")
        return ", ".join(parts)


def format_history(history) -> str:
    """``Indicator.history`` as lines ``  12.30 s  ready light on (...), ...`` (the demo)."""
    return "\n".join(f"{t:8.2f} s  {view.describe()}" for t, view in history)


@dataclass
class _Output:
    name: str  # "ready light", "paper light", "buzzer"
    key_path: str  # its pin in the configuration
    device: object  # a gpiozero LED or Buzzer
    written: bool | None = None  # the last value written (None: unknown)
    failed: bool = False  # a write failed: left alone from then on


class Indicator:
    """The ready light, bin lights and buzzer of ``indicator`` and ``bins`` on ``pin_factory``.

    The loop calls, with ``now_s`` in the actuators' timebase:

    - :meth:`show_state` with its state on every frame (and at start and stop);
    - :meth:`arrived` where it starts a new item (presence's "arrived", an item there at start);
    - :meth:`routed` when an item is decided (its bin, and whether it is the fallback);
    - :meth:`update` on every frame (ends bin lights and beeps, blinks the ready light);
    - :meth:`safe_all` in the stop-signal handler and on every way out; :meth:`close` at the end.

    The ready light: on in state "empty"; in "occupied", "deciding" or "settled" blinking while
    the item on the board is undecided (from :meth:`arrived`, or entering "occupied" or
    "deciding" from another state, to :meth:`routed`), off once it is decided; off in any other
    state. These calls may come from two threads (a lock orders them); :meth:`safe_all` takes
    no lock, so a signal handler never waits.
    """

    def __init__(self, indicator: IndicatorConfig, bins: dict[str, BinConfig], *, pin_factory):
        from gpiozero import LED, Buzzer

        self.config = indicator
        self.ready: _Output | None = None
        self.buzzer: _Output | None = None
        self.bin_lights: dict[str, _Output] = {}
        self.history: deque[tuple[float, IndicatorView]] = deque(maxlen=HISTORY_LENGTH)
        self._lock = threading.Lock()
        self._state = "starting"
        self._undecided = False  # the item on the board is not decided yet
        self._ready_mode = "off"  # "on", "blinking" or "off"
        self._blink_since_s = 0.0
        self._lit_bin = ""  # the bin of the last routed item while its show time lasts
        self._lit_until_s = -math.inf
        self._beep_until_s = -math.inf
        self._now_s = 0.0
        self._stopping = False  # set by safe_all(): nothing turns on any more
        wanted = []
        if indicator.ready_pin is not None:
            wanted.append(("ready light", "indicator.ready_pin", LED, indicator.ready_pin, ""))
        if indicator.buzzer_pin is not None:
            wanted.append(("buzzer", "indicator.buzzer_pin", Buzzer, indicator.buzzer_pin, ""))
        wanted += [(f"{name} light", f"bins.{name}.light_pin", LED, bin_.light_pin, name)
                   for name, bin_ in bins.items() if bin_.light_pin is not None]
        key_path = ""
        try:
            for name, key_path, kind, pin, bin_name in wanted:
                device = kind(pin, active_high=indicator.active_high, initial_value=False, pin_factory=pin_factory)
                output = _Output(name, key_path, device, written=False)
                if bin_name:
                    self.bin_lights[bin_name] = output
                elif kind is Buzzer:
                    self.buzzer = output
                else:
                    self.ready = output
        except Exception as exc:  # noqa: BLE001 - sorted by gpio_setup_error
            self.close()
            raise gpio_setup_error(exc, pin_key=key_path, device_key=key_path) from None

    @property
    def outputs(self) -> list[_Output]:
        return [o for o in (self.ready, self.buzzer, *self.bin_lights.values()) if o is not None]

    @property
    def stopping(self) -> bool:
        """True once :meth:`safe_all` ran: every output stays off."""
        return self._stopping

    # -- what the loop calls ---------------------------------------------------------------
    def show_state(self, state: str, now_s: float) -> None:
        """The loop's state at ``now_s`` (see the class); entering "stuck" beeps."""
        with self._lock:
            if self._stopping:
                return
            if state == "stuck" and self._state != "stuck":
                self._beep(now_s, self.config.stuck_beep_ms)
            if state not in ITEM_STATES:
                self._undecided = False
            elif state in ARRIVAL_STATES and self._state not in ARRIVAL_STATES:
                self._undecided = True  # the board was empty, settled, stuck, ...: a new item
            self._state = state
            self._update(now_s)

    def arrived(self, now_s: float) -> None:
        """A new item is on the board, not decided yet: the ready light blinks."""
        with self._lock:
            if self._stopping:
                return
            self._undecided = True
            self._update(now_s)

    def routed(self, bin_name: str, now_s: float, fallback: bool = False) -> None:
        """The item on the board was routed to ``bin_name`` at ``now_s``: the ready light goes
        out, the bin's light (if it has one) is on for ``show_ms`` and any other bin light off;
        a fallback decision beeps."""
        with self._lock:
            if self._stopping:
                return
            self._undecided = False
            self._lit_bin, self._lit_until_s = bin_name, now_s + self.config.show_ms / 1000
            if fallback:
                self._beep(now_s, self.config.fallback_beep_ms)
            self._update(now_s)

    def update(self, now_s: float) -> None:
        """Bring every output to what it should show at ``now_s``."""
        with self._lock:
            self._update(now_s)

    def safe_all(self) -> None:
        """Every output off now, and nothing turns on any more (signal handlers, errors, close)."""
        self._stopping = True  # first: a write this handler interrupted undoes itself
        for output in self.outputs:
            try:
                output.device.off()
                output.written = False
            except Exception as exc:  # a closed device must not keep the others on
                log.error("indicator %s: could not be turned off (%s)", output.name, first_line(exc))
        self._ready_mode, self._lit_bin, self._beep_until_s = "off", "", -math.inf
        self._remember(self._now_s)

    def close(self) -> None:
        self.safe_all()
        for output in self.outputs:
            try:
                output.device.close()
            except Exception as exc:  # noqa: BLE001 - closing the others matters more
                log.error("indicator %s: could not be closed (%s)", output.name, first_line(exc))
        self.ready, self.buzzer, self.bin_lights = None, None, {}

    def __enter__(self) -> "Indicator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the person sees --------------------------------------------------------------
    def what_the_person_sees(self, now_s: float | None = None) -> IndicatorView:
        """The indicator at ``now_s`` (default: the last time it was updated)."""
        t = self._now_s if now_s is None else now_s
        stopping = self._stopping
        lit = self._lit_bin if t + TIME_TOLERANCE_S < self._lit_until_s and not stopping else ""
        return IndicatorView(
            ready="" if self.ready is None else ("off" if stopping else self._ready_mode),
            meaning="stopped" if stopping else self._meaning(),
            bin_light=lit if lit in self.bin_lights else "",
            bin_lights=bool(self.bin_lights),
            buzzer=None if self.buzzer is None else (not stopping and t + TIME_TOLERANCE_S < self._beep_until_s),
            failed=tuple(o.name for o in self.outputs if o.failed))

    # -- inside ----------------------------------------------------------------------------
    def _update(self, now_s: float) -> None:
        if self._stopping:
            return
        self._now_s = now_s
        mode = "on" if self._state == "empty" else "off"
        if self._state in ITEM_STATES and self._undecided:
            mode = "blinking"
        if mode == "blinking" and self._ready_mode != "blinking":
            self._blink_since_s = now_s  # every blink starts with the light on
        self._ready_mode = mode
        if self._lit_bin and now_s + TIME_TOLERANCE_S >= self._lit_until_s:
            self._lit_bin = ""
        self._drive(self.ready, self._ready_is_on(now_s))
        for name, light in self.bin_lights.items():
            self._drive(light, name == self._lit_bin)
        self._drive(self.buzzer, now_s + TIME_TOLERANCE_S < self._beep_until_s)
        self._remember(now_s)

    def _meaning(self) -> str:
        if self._state in ITEM_STATES:
            return "deciding" if self._ready_mode == "blinking" else "sorting the item"
        return MEANINGS.get(self._state, self._state)

    def _ready_is_on(self, now_s: float) -> bool:
        if self._ready_mode != "blinking":
            return self._ready_mode == "on"
        half_periods = (max(0.0, now_s - self._blink_since_s) + TIME_TOLERANCE_S) / (self.config.blink_ms / 1000)
        return int(half_periods) % 2 == 0

    def _beep(self, now_s: float, duration_ms: float) -> None:
        if duration_ms > 0:
            self._beep_until_s = max(self._beep_until_s, now_s + duration_ms / 1000)

    def _drive(self, output: _Output | None, on: bool) -> None:
        if output is None or output.failed or output.written == on:
            return
        try:
            output.device.on() if on else output.device.off()
            output.written = on
            if on and self._stopping:  # safe_all() ran during this write: off again at once
                output.device.off()
                output.written = False
        except Exception as exc:  # noqa: BLE001 - gpiozero / pin driver errors
            if not is_gpio_failure(exc):
                raise
            output.failed = True
            log.error("indicator %s (%s): GPIO failed, left alone from now on; sorting goes on (%s)",
                      output.name, output.key_path, first_line(exc))

    def _remember(self, now_s: float) -> None:
        if not self.outputs:  # nothing to see: no history (a run without an indicator prints none)
            return
        view = self.what_the_person_sees(now_s)
        if not self.history or self.history[-1][1] != view:
            self.history.append((now_s, view))
            log.debug("indicator at %.2f s: %s", now_s, view.describe() or "none")
