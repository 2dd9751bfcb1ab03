"""The indicator on gpiozero's MockFactory pins over simulated time: what the person at the bin
sees for each of the loop's states and events, and that a stop leaves every output off.

Times are seconds passed in, as the loop passes them (frame times here), so no test sleeps.
"""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest
from gpiozero import DigitalOutputDevice
from gpiozero.pins.mock import MockFactory, MockPWMPin

from device.config import BinConfig, IndicatorConfig
from device.errors import ActuatorError, ConfigError
from device.indicator import Indicator, format_history

READY, BUZZER, PAPER, GLASS = 5, 6, 20, 21
CONFIG = IndicatorConfig(ready_pin=READY, buzzer_pin=BUZZER, blink_ms=250, show_ms=3000,
                         fallback_beep_ms=150, stuck_beep_ms=1000)
BINS = {"paper": BinConfig("diverter", light_pin=PAPER), "glass": BinConfig("diverter", light_pin=GLASS),
        "landfill": BinConfig("diverter")}  # the fallback bin has no light
OUTPUT_PINS = {"ready": READY, "buzzer": BUZZER, "paper": PAPER, "glass": GLASS}


@pytest.fixture
def factory():
    return MockFactory(pin_class=MockPWMPin)


def pins(factory) -> dict[str, bool]:
    """What each output pin carries now."""
    return {name: bool(factory.pin(number).state) for name, number in OUTPUT_PINS.items()}


def lit(factory) -> set[str]:
    return {name for name, on in pins(factory).items() if on}


def frames(start_s: float, end_s: float, fps: float = 100.0) -> list[float]:
    """Frame times from ``start_s`` up to (not including) ``end_s``."""
    return [start_s + k / fps for k in range(round((end_s - start_s) * fps))]


def play(indicator: Indicator, factory, script: list[tuple[float, str]], end_s: float, events=None):
    """Show each scripted state from its time on, one frame every 10 ms, with ``events``
    ({time: callable(now_s)}) at their frame; the pin states after every frame."""
    events = dict(events or {})
    timeline = []
    for t in frames(script[0][0], end_s):
        state = [s for start_s, s in script if start_s <= t + 1e-9][-1]
        for at_s in [a for a in events if a <= t + 1e-9]:
            events.pop(at_s)(t)
        indicator.show_state(state, t)
        indicator.update(t)
        timeline.append((t, state, pins(factory)))
    return timeline


def switches(timeline, output: str) -> list[tuple[float, bool]]:
    """The times ``output`` changed, with its new value."""
    changes, last = [], False
    for t, _state, values in timeline:
        if values[output] != last:
            changes.append((round(t, 3), values[output]))
            last = values[output]
    return changes


# ---------------------------------------------------------------------------- the ready light
def test_ready_light_over_one_item_on_then_blinking_then_off_then_on_again(factory):
    """Learning the board (off), board empty and armed (on), an item arrives at 2.0 s (blinks
    250 ms on / 250 ms off), it is decided at 2.9 s (off while it is sorted), the board is
    empty again at 4.0 s (on)."""
    script = [(0.0, "learning"), (1.0, "empty"), (2.0, "occupied"), (2.9, "settled"), (4.0, "empty")]
    with Indicator(CONFIG, BINS, pin_factory=factory) as indicator:
        timeline = play(indicator, factory, script, 5.0,
                        events={2.9: lambda t: indicator.routed("paper", t)})
    assert switches(timeline, "ready") == [(1.0, True), (2.25, False), (2.5, True), (2.75, False), (4.0, True)]
    assert not lit(factory)  # closed: everything off


def test_ready_light_is_steadily_on_only_in_the_empty_armed_state(factory):
    """Each of the loop's states for a second of frames: the share of frames the light is on."""
    script = [(0.0, "starting"), (1.0, "learning"), (2.0, "empty"), (3.0, "occupied"), (4.0, "deciding"),
              (5.0, "settled"), (6.0, "stuck"), (7.0, "empty"), (8.0, "stopped")]
    with Indicator(CONFIG, BINS, pin_factory=factory) as indicator:
        timeline = play(indicator, factory, script, 9.0, events={5.0: lambda t: indicator.routed("paper", t)})
    on_share = {}
    for start_s, state in script:
        seen = [values["ready"] for t, _s, values in timeline if start_s <= t + 1e-9 < start_s + 1.0]
        on_share[f"{start_s:.0f} {state}"] = sum(seen) / len(seen)
    assert on_share == {"0 starting": 0.0, "1 learning": 0.0, "2 empty": 1.0, "3 occupied": 0.5,
                        "4 deciding": 0.5, "5 settled": 0.0, "6 stuck": 0.0, "7 empty": 1.0, "8 stopped": 0.0}


def test_ready_light_blinks_from_arrival_to_decision_however_the_loop_names_the_wait(factory):
    """An item decided before presence calls it settled (an early decision) leaves the light off
    for the rest of its stay; one still waiting for its decision once settled blinks on; an item
    dropped on a decided item's board (settled -> occupied) blinks again."""
    with Indicator(CONFIG, BINS, pin_factory=factory) as indicator:
        indicator.show_state("empty", 0.0)
        indicator.show_state("occupied", 1.0)
        assert indicator.what_the_person_sees().ready == "blinking"
        indicator.routed("glass", 1.4)  # decided early, still "occupied"
        indicator.show_state("occupied", 1.5)
        assert indicator.what_the_person_sees().ready == "off" and not pins(factory)["ready"]
        indicator.show_state("settled", 2.0)
        assert indicator.what_the_person_sees().ready == "off"
        indicator.show_state("occupied", 3.0)  # a second item dropped on the first
        assert indicator.what_the_person_sees().ready == "blinking" and pins(factory)["ready"]
        indicator.show_state("settled", 3.5)  # settled, its decision not there yet
        assert indicator.what_the_person_sees().ready == "blinking"
        indicator.routed("paper", 3.7)
        assert indicator.what_the_person_sees().meaning == "sorting the item"
        indicator.arrived(4.0)  # the loop says so itself
        indicator.show_state("settled", 4.0)
        assert indicator.what_the_person_sees().ready == "blinking" and pins(factory)["ready"]


# ------------------------------------------------------------------------------- bin lights
def test_bin_light_shows_the_routed_bin_for_show_ms_and_moves_with_the_next_item(factory):
    with Indicator(CONFIG, BINS, pin_factory=factory) as indicator:
        indicator.routed("paper", 10.0)
        assert lit(factory) == {"paper"}
        indicator.update(12.99)
        assert lit(factory) == {"paper"}
        indicator.update(13.0)  # show_ms = 3000 after routing
        assert lit(factory) == set()
        indicator.routed("paper", 20.0)
        indicator.routed("glass", 21.0)  # the next item: only its bin is lit
        assert lit(factory) == {"glass"}
        indicator.routed("landfill", 22.0)  # a bin without a light: none is lit
        assert lit(factory) == set()
        indicator.update(30.0)
        assert lit(factory) == set()


def test_buzzer_beeps_for_a_fallback_decision_and_once_when_an_item_is_stuck(factory):
    with Indicator(CONFIG, BINS, pin_factory=factory) as indicator:
        indicator.routed("paper", 1.0, fallback=False)
        assert not pins(factory)["buzzer"]
        indicator.routed("landfill", 5.0, fallback=True)
        assert pins(factory)["buzzer"]
        indicator.update(5.14)
        assert pins(factory)["buzzer"]
        indicator.update(5.15)  # fallback_beep_ms = 150
        assert not pins(factory)["buzzer"]
        timeline = play(indicator, factory, [(40.0, "settled"), (41.0, "stuck"), (45.0, "empty"), (46.0, "stuck")],
                        48.0)
    assert switches(timeline, "buzzer") == [(41.0, True), (42.0, False), (46.0, True), (47.0, False)]
    assert not any(values["ready"] for t, state, values in timeline if state == "stuck")


# --------------------------------------------------------------------------------- stopping
def test_safe_all_turns_everything_off_and_nothing_turns_on_after_it(factory):
    with Indicator(CONFIG, BINS, pin_factory=factory) as indicator:
        indicator.show_state("empty", 1.0)
        indicator.routed("glass", 1.0, fallback=True)
        assert lit(factory) == {"ready", "glass", "buzzer"}
        indicator.safe_all()
        assert lit(factory) == set()
        indicator.show_state("empty", 1.1)
        indicator.arrived(1.2)
        indicator.show_state("occupied", 1.2)
        indicator.routed("paper", 1.3, fallback=True)
        indicator.show_state("stuck", 1.4)
        for t in frames(1.4, 3.0):
            indicator.update(t)
        assert lit(factory) == set()
        assert indicator.what_the_person_sees().describe() == (
            "ready light off (stopped), bin lights off, buzzer quiet")


def test_a_real_sigterm_turns_every_light_off_at_once(factory):
    """The handler the loop installs calls safe_all(): every output is off well within 100 ms
    of the signal, however many frames the loop still processes."""
    indicator = Indicator(CONFIG, BINS, pin_factory=factory)
    saved = signal.signal(signal.SIGTERM, lambda signum, frame: indicator.safe_all())
    try:
        indicator.show_state("occupied", 0.0)
        indicator.routed("paper", 0.0, fallback=True)
        indicator.show_state("empty", 0.0)
        assert lit(factory) == {"ready", "paper", "buzzer"}
        sent_at = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        t = 0.0
        while lit(factory) and time.monotonic() - sent_at < 1.0:  # the loop goes on with frames
            t += 0.01
            indicator.show_state("empty", t)
            indicator.update(t)
        off_after_s = time.monotonic() - sent_at
        for _ in range(50):  # frames after the signal turn nothing back on
            t += 0.01
            indicator.show_state("empty", t)
            indicator.update(t)
        assert lit(factory) == set() and off_after_s < 0.1
    finally:
        signal.signal(signal.SIGTERM, saved)
        indicator.close()


class InterruptedPin(MockPWMPin):
    """A mock pin that runs ``interrupt`` (once) just after it was switched on: what a signal
    handler arriving in the middle of a write does."""

    interrupt = None

    def _change_state(self, value):
        changed = super()._change_state(value)
        if value and InterruptedPin.interrupt is not None:
            handler, InterruptedPin.interrupt = InterruptedPin.interrupt, None
            handler()
        return changed


def test_a_stop_signal_during_a_write_leaves_that_output_off():
    factory = MockFactory(pin_class=InterruptedPin)
    with Indicator(CONFIG, BINS, pin_factory=factory) as indicator:
        InterruptedPin.interrupt = indicator.safe_all
        indicator.show_state("empty", 0.0)  # the ready light goes on; the "signal" lands there
        assert InterruptedPin.interrupt is None and indicator.stopping
        assert lit(factory) == set()
        indicator.update(0.1)
        assert lit(factory) == set()


# ----------------------------------------------------------------------- absent or failing
def test_every_output_is_optional(factory):
    with Indicator(IndicatorConfig(), {"paper": BinConfig("diverter")}, pin_factory=factory) as none:
        none.show_state("empty", 0.0)
        none.routed("paper", 0.1, fallback=True)
        none.update(0.2)
        assert none.outputs == [] and none.what_the_person_sees().describe() == ""
    only_bins = {"paper": BinConfig("diverter", light_pin=PAPER)}
    with Indicator(IndicatorConfig(), only_bins, pin_factory=factory) as indicator:
        indicator.show_state("empty", 0.0)
        indicator.routed("paper", 0.1, fallback=True)
        assert lit(factory) == {"paper"}
        assert indicator.what_the_person_sees().describe() == "paper light on"
    with Indicator(IndicatorConfig(buzzer_pin=BUZZER), {}, pin_factory=factory) as indicator:
        indicator.show_state("stuck", 0.0)
        assert lit(factory) == {"buzzer"}
        assert indicator.what_the_person_sees().describe() == "buzzer sounding"


def test_what_the_person_sees_reads_as_one_line_per_moment(factory):
    with Indicator(CONFIG, BINS, pin_factory=factory) as indicator:
        indicator.show_state("learning", 0.0)
        assert indicator.what_the_person_sees().describe() == (
            "ready light off (learning the board), bin lights off, buzzer quiet")
        indicator.show_state("occupied", 1.0)
        indicator.update(1.3)  # in the off half of a blink: still "blinking" to the person
        assert indicator.what_the_person_sees().describe() == (
            "ready light blinking (deciding), bin lights off, buzzer quiet")
        indicator.routed("landfill", 1.5, fallback=True)
        indicator.show_state("settled", 1.5)
        assert indicator.what_the_person_sees().describe() == (
            "ready light off (sorting the item), bin lights off, buzzer sounding")
        indicator.routed("glass", 8.0)
        indicator.show_state("stuck", 40.0)
        assert indicator.what_the_person_sees(40.0).describe() == (
            "ready light off (stuck: clear the board), bin lights off, buzzer sounding")
        indicator.show_state("empty", 41.0)
        indicator.routed("paper", 41.0)
        assert indicator.what_the_person_sees().describe() == (
            "ready light on (drop the next item), paper light on, buzzer quiet")
        assert indicator.what_the_person_sees(44.0).bin_light == ""  # show_ms later
    history = format_history(indicator.history).splitlines()
    assert history[0] == "    0.00 s  ready light off (learning the board), bin lights off, buzzer quiet"
    assert history[-1].endswith("ready light off (stopped), bin lights off, buzzer quiet")


def test_active_low_outputs_are_high_when_off(factory):
    config = IndicatorConfig(ready_pin=READY, active_high=False)
    with Indicator(config, {}, pin_factory=factory) as indicator:
        assert factory.pin(READY).state == 1
        indicator.show_state("empty", 0.0)
        assert factory.pin(READY).state == 0
        indicator.safe_all()
        assert factory.pin(READY).state == 1  # off, which is high


def test_a_busy_line_is_an_actuator_error_naming_the_pin_and_nothing_stays_claimed(factory):
    busy = DigitalOutputDevice(PAPER, pin_factory=factory)
    with pytest.raises(ActuatorError, match=r"^bins\.paper\.light_pin: cannot set up GPIO") as err:
        Indicator(CONFIG, BINS, pin_factory=factory)
    assert err.value.exit_code == 69
    busy.close()
    with Indicator(CONFIG, BINS, pin_factory=factory) as indicator:  # the ready light was released
        assert len(indicator.outputs) == 4


def test_a_pin_the_board_does_not_have_is_a_config_error_naming_the_key(factory):
    with pytest.raises(ConfigError, match=r"^indicator\.buzzer_pin: ") as err:
        Indicator(IndicatorConfig(ready_pin=READY, buzzer_pin=99), {}, pin_factory=factory)
    assert err.value.exit_code == 78


def test_a_light_failing_while_sorting_is_logged_once_and_sorting_goes_on(factory, caplog):
    with Indicator(CONFIG, BINS, pin_factory=factory) as indicator:
        indicator.ready.device.close()  # the line is gone under it
        with caplog.at_level(logging.ERROR, logger="device.indicator"):
            for t in frames(0.0, 1.0):
                indicator.show_state("occupied" if t < 0.5 else "empty", t)
            indicator.routed("paper", 1.0)
        assert lit(factory) == {"paper"}  # the other outputs still work
        assert indicator.what_the_person_sees().failed == ("ready light",)
        assert "FAILED: ready light" in indicator.what_the_person_sees().describe()
    failed = [r.getMessage() for r in caplog.records if "GPIO failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].startswith("indicator ready light (indicator.ready_pin): GPIO failed")
