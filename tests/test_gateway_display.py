"""The gateway's displays: what a person reads on the screen, and that a pulled cable is survived.

Serial displays are read at the far end of a real pty pair joined by socat; the LCD through the
one permitted fake, an SMBus that decodes the LCD's 4-bit writes back into its characters.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fieldhub.gateway.display import Display, DisplayConfigError, parse_display_config
from fieldhub.gateway.display.config import LcdSinkConfig
from fieldhub.gateway.display.lcd import LcdSink
from fieldhub.gateway.display.template import Facts
from tests.support.lcd_bus import FakeSMBus, Lcd
from tests.support.ptys import PtyPair, decode_screen
from tests.waiting import eventually

DOC = Path(__file__).resolve().parents[1] / "docs" / "gateway-display.md"


@pytest.fixture
def ptys(tmp_path: Path) -> Iterator[PtyPair]:
    pair = PtyPair(tmp_path)
    pair.start()
    yield pair
    pair.stop()


def _config(template: list[str], *sinks: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {"template": template, "sinks": list(sinks), **options}


@pytest.fixture
async def lcd_display() -> AsyncIterator[tuple[Display, Lcd]]:
    lcd = Lcd()
    section = _config(
        ["{c1.temp:.1f}°C {c1:presence}", "alarms {alarms}"],
        {"type": "lcd", "bus": 1, "address": 0x27},
        reconnect_max_s=0.2,
    )
    display = Display(parse_display_config(section), lambda bus: FakeSMBus(bus, lcd))
    runner = _start(display)
    yield display, lcd
    await display.aclose()
    await runner


def _start(display: Display) -> asyncio.Task[None]:
    return asyncio.create_task(display.run())


async def test_the_documented_example_shows_what_the_doc_says(ptys: PtyPair):
    blocks = re.findall(r"```(yaml|text)\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    section = yaml.safe_load(blocks[0][1])["display"]
    expected = [line.rstrip() for line in blocks[1][1].splitlines()]
    section["sinks"][0]["port"] = str(ptys.display_end)
    display = Display(parse_display_config(section))
    display.value("ctrl-1", "temp", 21.46)
    display.presence("ctrl-1", "linked")
    display.value("ctrl-2", "door", True)
    display.presence("ctrl-2", "offline")
    display.alarms(2, "Door open on ctrl-2")
    runner = _start(display)
    try:
        await eventually(
            lambda: [r.rstrip() for r in decode_screen(ptys.received(), 4)] == expected,
            f"the screen {expected}",
        )
        assert ptys.received().startswith("HELLO 4 20\nCLR\n")
        assert all(len(row) == 20 for row in decode_screen(ptys.received(), 4))
    finally:
        await display.aclose()
        await runner


async def test_only_changed_rows_are_sent_and_missing_values_show_dashes(ptys: PtyPair):
    section = _config(
        ["T {a.t:>5.1f}", "{a:presence} {b.t}"],
        {"type": "serial", "port": str(ptys.display_end), "width": 12, "rows": 3},
    )
    display = Display(parse_display_config(section))
    runner = _start(display)
    try:
        await eventually(lambda: "L1 -- --" in ptys.received(), "dashes for unknown values")
        ptys.forget()
        display.value("a", "t", 7.25)
        display.value("a", "other", 1)  # not in the template: nothing to send
        await eventually(lambda: ptys.received() == "L0 T   7.2     \n", "only row 0 sent")
        ptys.forget()
        display.value("b", "t", "hot\nL0 forged")  # a value cannot inject a protocol line
        await eventually(ptys.received, "row 1 sent")
        assert ptys.received() == "L1 -- hot?L0 fo\n"
    finally:
        await display.aclose()
        await runner


async def test_a_pulled_serial_cable_is_survived_logged_once_and_counted(
    ptys: PtyPair, caplog: pytest.LogCaptureFixture
):
    section = _config(
        ["temp {c.t}"],
        {"type": "serial", "port": str(ptys.display_end), "width": 10, "rows": 1},
        reconnect_max_s=0.3,
    )
    caplog.set_level(logging.INFO, logger="fieldhub.gateway.display")
    display = Display(parse_display_config(section))
    runner = _start(display)
    name = f"serial:{ptys.display_end}"
    try:
        display.value("c", "t", 1)
        await eventually(lambda: "L0 temp 1    \n" in ptys.received(), "the first value")
        ptys.stop()
        display.value("c", "t", 2)
        await eventually(lambda: display.stats()[name].failures >= 1, "a failed write")
        for value in range(3, 12):  # the gateway keeps feeding while the cable is out
            display.value("c", "t", value)
        await eventually(lambda: display.stats()[name].failures >= 3, "attempts to reopen")
        ptys.start()
        await eventually(
            lambda: decode_screen(ptys.received(), 1) == ["temp 11   "],
            "the screen after replugging",
        )
        assert ptys.received().startswith("HELLO 1 10\nCLR\n")
        stats = display.stats()[name]
        assert (stats.outages, stats.recoveries) == (1, 1)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "unavailable" in warnings[0].getMessage()
        assert any("is back after" in r.getMessage() for r in caplog.records)
    finally:
        await display.aclose()
        await runner


async def test_the_lcd_shows_the_template_with_the_rom_degree_sign(
    lcd_display: tuple[Display, Lcd],
):
    display, lcd = lcd_display
    display.value("c1", "temp", 21.46)
    display.presence("c1", "linked")
    display.alarms(0, None)
    expected = ["21.5°C linked   ", "alarms 0        "]
    await eventually(lambda: lcd.rows(16, 2) == expected, f"the LCD reading {expected}")
    assert lcd.backlight
    assert lcd.display_on
    assert lcd.inits == 1


async def test_a_message_replaces_the_template_for_its_time(lcd_display: tuple[Display, Lcd]):
    display, lcd = lcd_display
    display.alarms(3, None)
    await eventually(lambda: lcd.rows(16, 2)[1] == "alarms 3        ", "the template")
    display.message("Pair ctrl-7: PIN 418203", 1.0)
    await eventually(
        lambda: lcd.rows(16, 2) == ["Pair ctrl-7: PIN", "418203          "], "the message"
    )
    await eventually(lambda: lcd.rows(16, 2)[1] == "alarms 3        ", "the template again")


async def test_an_lcd_unplugged_and_replugged_is_started_again(
    lcd_display: tuple[Display, Lcd],
):
    display, lcd = lcd_display
    display.value("c1", "temp", 5)
    await eventually(lambda: lcd.rows(16, 2)[0].startswith("5.0°C"), "the first value")
    lcd.unplug()
    display.value("c1", "temp", 6)
    await eventually(lambda: display.stats()["lcd:1:0x27"].outages == 1, "the outage")
    lcd.present = True
    await eventually(lambda: lcd.rows(16, 2)[0].startswith("6.0°C --"), "the value after")
    assert lcd.rows(16, 2)[1] == "alarms --       "  # the whole screen, not only what changed
    assert lcd.inits == 2
    assert display.stats()["lcd:1:0x27"].recoveries == 1


async def test_a_dead_display_does_not_hold_up_a_working_one(tmp_path: Path):
    lcd = Lcd()
    section = _config(
        ["v {c.v}"],
        {"type": "serial", "port": str(tmp_path / "no-such-tty"), "width": 8, "rows": 1},
        {"type": "lcd", "width": 8, "rows": 1},
        reconnect_max_s=0.2,
    )
    display = Display(parse_display_config(section), lambda bus: FakeSMBus(bus, lcd))
    runner = _start(display)
    try:
        for value in range(5):
            display.value("c", "v", value)
            shown = [f"v {value}".ljust(8)]
            await eventually(lambda: lcd.rows(8, 1) == shown, f"value {value}")  # noqa: B023
        assert display.stats()[f"serial:{tmp_path / 'no-such-tty'}"].outages == 1
    finally:
        await display.aclose()
        await runner


@pytest.mark.parametrize(
    ("section", "field", "problem"),
    [
        (_config(["{ctrl-1.temp:.1z}"], {"type": "lcd"}), "display", "unknown placeholder"),
        (_config(["{ctrl-1}"], {"type": "lcd"}), "display", "template[0]: unknown placeholder"),
        (_config(["ok", "{x[0]}"], {"type": "lcd"}), "display", "template[1]: unknown"),
        (_config(["{c.t} {"], {"type": "lcd"}), "display", "column 7 is never closed"),
        (_config(["a } b"], {"type": "lcd"}), "display", "closes nothing"),
        (_config(["1", "2", "3"], {"type": "lcd"}), "display", "shows 2 rows; the template has 3"),
        (_config(["x"], {"type": "serial"}), "display.sinks[0].port", "missing required field"),
        (
            _config(["x"], {"type": "serial", "port": "p", "baud": "fast"}),
            "display.sinks[0].baud",
            "Expected int",
        ),
        (_config(["x"], {"type": "lcd", "address": 0x99}), "display.sinks[0].address", "<= 119"),
        (_config(["x"], {"type": "vga"}), "display.sinks[0].type", "Invalid value 'vga'"),
        (_config(["x"], {"type": "lcd"}, {"type": "lcd"}), "display", "more than once"),
        (_config(["x"], {"type": "lcd"}, colour="red"), "display.colour", "unknown field"),
        ({"sinks": [{"type": "lcd"}]}, "display.template", "missing required field"),
    ],
)
def test_a_wrong_section_names_the_field(section: dict[str, Any], field: str, problem: str):
    with pytest.raises(DisplayConfigError) as caught:
        parse_display_config(section)
    assert caught.value.field == field
    assert problem in caught.value.problem


def test_braces_brackets_and_formats_render_as_documented():
    section = _config(
        ["{{{[hall.2].t:+d}}} {c.s:.1f} {c.b}", "{c.n:>4d}|{c.f:.0%}|{c.__class__}"],
        {"type": "lcd"},
    )
    template = parse_display_config(section).parsed_template()
    facts = Facts(
        values={
            ("hall.2", "t"): 3,
            ("c", "s"): "warm",
            ("c", "b"): False,
            ("c", "n"): 42,
            ("c", "f"): 0.5,
        },
        presence={},
    )
    assert template.render(facts, 16, 2) == ["{+3} warm off   ", "  42|50%|--     "]


async def test_the_hub_placeholder_shows_the_gateways_link_as_it_changes():
    lcd = Lcd()
    section = _config(["hub {hub}"], {"type": "lcd", "rows": 1})
    display = Display(parse_display_config(section), lambda bus: FakeSMBus(bus, lcd))
    runner = _start(display)
    try:
        await eventually(lambda: lcd.rows(16, 1) == ["hub --          "], "not known yet")
        display.hub(True)
        await eventually(lambda: lcd.rows(16, 1) == ["hub online      "], "hub online")
        display.hub(False)
        await eventually(lambda: lcd.rows(16, 1) == ["hub offline     "], "hub offline")
    finally:
        await display.aclose()
        await runner


def test_characters_outside_the_lcd_rom_are_replaced():
    lcd = Lcd()
    bus = FakeSMBus(1, lcd)
    sink = LcdSink(LcdSinkConfig(width=8, rows=1), lambda _bus: bus)
    sink.open()
    sink.show(["é~\\ä°µ🙂x"], None)
    assert lcd.rows(8, 1) == ["e??ä°µ?x"]


async def test_a_burst_of_values_is_rendered_at_most_refresh_hz_times_a_second():
    lcd = Lcd()
    section = _config(["v {c.v}"], {"type": "lcd", "width": 8, "rows": 1}, refresh_hz=5)
    display = Display(parse_display_config(section), lambda bus: FakeSMBus(bus, lcd))
    runner = _start(display)
    try:
        started = time.monotonic()
        for value in range(50):  # a value every 20 ms: ten times what the display shows
            display.value("c", "v", value)
            await asyncio.sleep(0.02)
        await eventually(lambda: lcd.rows(8, 1) == ["v 49    "], "the last value")
        seconds = time.monotonic() - started
        assert display.stats()["lcd:1:0x27"].writes <= 5 * seconds + 2
    finally:
        await display.aclose()
        await runner
