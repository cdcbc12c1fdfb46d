"""The technician page's HTML: server-rendered, no script, readable on a phone.

Everything shown is escaped (unit names, statuses and event messages come from hardware and
config, not from us). Styles are one small stylesheet served from the page itself, so the
Content-Security-Policy can forbid everything else.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from html import escape
from typing import Final

from fieldhub.agent.actions import ActionInfo
from fieldhub.agent.eventlog import LoggedEvent
from fieldhub.agent.web.view import UnitView

__all__ = ["STYLESHEET", "dashboard", "login_page"]

STYLESHEET: Final = b"""
body{font:16px/1.4 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:.5rem;color:#222}
header{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;justify-content:space-between}
h1{font-size:1.3rem;margin:.3rem 0}h2{font-size:1.1rem;margin:1.2rem 0 .4rem}
section{border-top:1px solid #ccc}
.units{display:grid;grid-template-columns:repeat(auto-fill,minmax(15rem,1fr));gap:.5rem}
.unit{border:1px solid #ddd;border-radius:.4rem;padding:.4rem .6rem}
.unit h3{font-size:1rem;margin:0 0 .3rem}.kind{color:#777;font-weight:normal}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.15rem .4rem;
vertical-align:top;border-bottom:1px solid #eee}th{color:#555;font-weight:normal}
form.action{display:flex;flex-wrap:wrap;gap:.4rem;align-items:center;margin:.4rem 0}
input[type=number],input[type=text],input[type=password]{width:8rem;padding:.4rem}
button{padding:.5rem .9rem;font-size:1rem}.note{color:#666;font-size:.9rem}
.flash{padding:.5rem;border-radius:.3rem;margin:.5rem 0;word-break:break-word}
.ok{background:#e5f6e5}.fail{background:#fbe3e3}
.inline{display:inline}.warning{color:#a60}.critical{color:#c00;font-weight:bold}
"""

_HEAD: Final = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width,initial-scale=1">'
    '<link rel="stylesheet" href="/style.css"><title>{title}</title></head><body>'
)
_INPUTS: Final = {
    "int": '<input type="number" step="1" name="arg.{n}" required>',
    "float": '<input type="number" step="any" name="arg.{n}" required>',
    "bool": '<input type="checkbox" name="arg.{n}">',
    "str": '<input type="text" maxlength="256" name="arg.{n}">',
}


def login_page(device_id: str, error: str = "") -> bytes:
    """The password form; ``error`` says why the last attempt failed."""
    title = escape(f"{device_id} · fieldhub agent")
    parts = [
        _HEAD.format(title=title),
        f"<h1>{escape(device_id)}</h1>",
        f'<p class="flash fail">{escape(error)}</p>' if error else "",
        '<form method="post" action="/login" class="action">',
        '<label>Password <input type="password" name="password" autofocus required '
        'autocomplete="current-password"></label> <button>Log in</button></form>',
        "</body></html>",
    ]
    return "".join(parts).encode()


def dashboard(
    *,
    device_id: str,
    csrf: str,
    flash: tuple[bool, str] | None,
    units: Sequence[UnitView],
    uplink: Mapping[str, object],
    actions: Sequence[ActionInfo],
    events: Sequence[LoggedEvent],
) -> bytes:
    """The one page: units, uplink, actions, events."""
    token = f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
    parts = [
        _HEAD.format(title=escape(f"{device_id} · fieldhub agent")),
        f"<header><h1>{escape(device_id)}</h1><span>",
        f'<a href="/">Refresh</a> <span class="note">{_time(time.time() * 1000)}</span> ',
        f'<form method="post" action="/logout" class="inline">{token}',
        "<button>Log out</button></form></span></header>",
    ]
    if flash is not None:
        ok, text = flash
        parts.append(f'<p class="flash {"ok" if ok else "fail"}">{escape(text)}</p>')
    parts.append('<section><h2>Units</h2><div class="units">')
    for unit in units:
        parts.append(
            f'<div class="unit"><h3>{escape(unit.name)} '
            f'<span class="kind">{escape(unit.kind)}</span></h3>{_table(unit.status)}</div>'
        )
    if not units:
        parts.append('<p class="note">No units configured.</p>')
    parts.append(f"</div></section><section><h2>Uplink</h2>{_table(uplink)}</section>")
    parts.append('<section id="actions"><h2>Actions</h2>')
    parts.extend(_action_form(action, token) for action in actions)
    if not actions:
        parts.append('<p class="note">No actions.</p>')
    parts.append("</section><section><h2>Recent events</h2>")
    parts.append(_events(events) if events else '<p class="note">None since the agent started.</p>')
    parts.append("</section></body></html>")
    return "".join(parts).encode()


def _action_form(action: ActionInfo, token: str) -> str:
    fields = "".join(
        f"<label>{escape(arg)} {_INPUTS[kind].format(n=escape(arg))}</label>"
        for arg, kind in action.args.items()
    )
    note = f'<span class="note">{escape(action.description)}</span>' if action.description else ""
    return (
        f'<form method="post" action="/action" class="action">{token}'
        f'<input type="hidden" name="action" value="{escape(action.name)}">'
        f"{fields}<button>{escape(action.name)}</button>{note}</form>"
    )


def _events(events: Sequence[LoggedEvent]) -> str:
    rows = "".join(
        f'<tr class="{escape(e.severity)}"><td>{_time(e.ts)}</td><td>{escape(e.type)}</td>'
        f"<td>{escape(e.message)}</td></tr>"
        for e in events
    )
    return f"<table><tr><th>when</th><th>what</th><th>message</th></tr>{rows}</table>"


def _table(values: Mapping[str, object]) -> str:
    rows = "".join(
        f"<tr><th>{escape(str(key))}</th><td>{escape(_text(value))}</td></tr>"
        for key, value in values.items()
    )
    return f"<table>{rows}</table>"


def _text(value: object) -> str:
    if value is None:
        return "\u2013"  # en dash: "no value"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _time(ts_ms: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts_ms / 1000))
