"""The HTML of the three pages (Now, Today, Label); every value from a file is escaped."""

from __future__ import annotations

import json
import time
from html import escape
from typing import Any

from device.capture_store import SKIP, Capture
from device.commands.logs import format_summary
from device.commands.status import format_age
from device.web import plots
from device.web.labelling import margin, top3_of

PAGES = (("now", "Now"), ("today", "Today"), ("label", "Label captures"))
CLASS_KEYS = "123456"
GRID = 12  # cards on the label page at a time

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#f4f4f4;color:#222}
nav{background:#243;padding:.5em 1em}nav a{color:#fff;margin-right:1.5em;text-decoration:none}
nav a.here{font-weight:bold;text-decoration:underline}main{padding:1em}
table{border-collapse:collapse;background:#fff}td,th{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:left}
.warn{color:#a30}.box{background:#fff;padding:.6em 1em;margin:0 0 1em 0;display:inline-block;vertical-align:top}
.grid{display:flex;flex-wrap:wrap;gap:.8em}.card{background:#fff;padding:.5em;border:3px solid #fff;width:500px}
.card.current{border-color:#2a6}.card img{width:160px;height:120px;object-fit:cover;margin:1px}
.card button{margin:2px}.small{font-size:.85em;color:#555}#message{min-height:1.4em;font-weight:bold}
"""


def layout(title: str, here: str, body: str, *, token: str = "", script: str = "") -> str:
    nav = "".join(f'<a href="/{name}"{" class=here" if name == here else ""}>{label}</a>' for name, label in PAGES)
    meta = f'<meta name="csrf-token" content="{escape(token)}">' if token else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}<title>waste-sorter: '
            f'{escape(title)}</title><style>{STYLE}</style></head><body><nav>{nav}</nav><main id="{here}">'
            f'<h1>{escape(title)}</h1>{body}</main>{f"<script>{script}</script>" if script else ""}</body></html>')


def _num(value: Any, fmt: str = "{:.2f}") -> str:
    return fmt.format(value) if isinstance(value, (int, float)) else "?"


# ---------------------------------------------------------------- now

def now_facts(report: dict[str, Any]) -> str:
    """The Now page's part that is refreshed: state, ready light, last items."""
    rt = report["runtime"]
    rows = [("service", report["service"])]
    if rt is None:
        rows.append(("live status", f"none at {report['status_file']} (sorter not running?)"))
    else:
        stale = f" — STALE, updated {format_age(rt['updated_age_s'])} ago" if rt["stale"] else ""
        rows += [("state", f"{rt['state']}{stale}"),
                 ("ready light", rt["indicator"] or "(no indicator configured)"),
                 ("frames", f"{_num(rt['fps'], '{:.1f}')} fps, {rt['frames']} read, {rt['frames_rejected']} rejected"),
                 ("items", f"{rt['items_since_start']} since start, {report['items_today']} today"),
                 ("model", f"{rt['model_path'] or '?'} ({rt['model_sha256'][:12] or '?'})"),
                 ("calibration", rt["calibration_id"] or "none")]
    table = "".join(f'<tr><th>{escape(k)}</th><td id="fact-{escape(k.replace(" ", "-"))}">{escape(str(v))}</td></tr>'
                    for k, v in rows)
    items = "".join(
        f'<tr class="item"><td>#{escape(str(r.get("item", "?")))}</td><td>{escape(str(r.get("ts", "?"))[11:19])}</td>'
        f'<td>{escape(str(r.get("label") or "-"))}</td><td>{_num(r.get("confidence"))}</td>'
        f'<td>{escape(str(r.get("bin", "?")))}</td><td>{escape(str(r.get("reason") or ""))}</td></tr>'
        for r in report["last_items"])
    problem = f'<p class="warn">{escape(report["log_problem"])}</p>' if report.get("log_problem") else ""
    return (f'<div class="box"><table>{table}</table></div>'
            f'<h2>Last items</h2>{problem}<table id="items"><tr><th>item</th><th>time (UTC)</th><th>class</th>'
            f'<th>confidence</th><th>bin</th><th>reason</th></tr>{items or "<tr><td colspan=6>none today</td></tr>"}'
            f'</table>')


NOW_SCRIPT = """
let n=0;const img=document.getElementById('frame');
function frame(){const next=new Image();next.onload=()=>{img.src=next.src;img.dataset.n=++n;
 document.getElementById('noframe').hidden=true;setTimeout(frame,500)};
 next.onerror=()=>{document.getElementById('noframe').hidden=false;setTimeout(frame,2000)};
 next.src='/frame.jpg?n='+Date.now()}
function facts(){fetch('/now/facts').then(r=>r.text()).then(t=>{document.getElementById('facts').innerHTML=t})
 .finally(()=>setTimeout(facts,2000))}
frame();setTimeout(facts,2000);
"""


def now_page(report: dict[str, Any]) -> str:
    body = (f'<div class="box"><img id="frame" alt="latest camera frame" width="320" data-n="0">'
            f'<p id="noframe" class="small" hidden>no frame: the sorter writes frame.jpg beside its status file '
            f'while it runs (--status-file)</p></div><div class="box" id="facts">{now_facts(report)}</div>')
    return layout("Now", "now", body, script=NOW_SCRIPT)


# ---------------------------------------------------------------- today

def _counts(counts: dict[str, int]) -> str:
    return escape(", ".join(f"{k} {v}" for k, v in counts.items()) or "-")


def day_hours(day_start: float, now: float) -> list[str]:
    """The UTC hours (as the summary's per_hour keys) from local midnight to ``now``."""
    first = int(day_start // 3600)
    return [time.strftime("%Y-%m-%dT%H:00Z", time.gmtime(h * 3600)) for h in range(first, int(now // 3600) + 1)]


def today_page(summary: dict[str, Any], runtime: dict[str, Any] | None, hours_utc: list[str]) -> str:
    """``hours_utc``: the hours to plot (:func:`day_hours`); the summary's others are added."""
    per_hour = summary["per_hour"]
    hours_utc = sorted(set(hours_utc) | set(per_hour))
    empty = {"items": 0, "uncertain": 0, "bins": {}}
    labels = [h[11:13] if len(h) >= 13 else "?" for h in hours_utc]
    bins = list(summary["bins"])
    per_bin = {b: [per_hour.get(h, empty)["bins"].get(b, 0) for h in hours_utc] for b in bins}
    rows = [per_hour.get(h, empty) for h in hours_utc]
    rates = [row["uncertain"] / row["items"] if row["items"] else None for row in rows]
    stuck = "?" if runtime is None else str(runtime["stuck_events"])
    since_start = {} if runtime is None else runtime["reject_reasons"]
    rate = summary["uncertain_rate"]
    facts = [("items", str(summary["items"])), ("bins", _counts(summary["bins"])),
             ("classes", _counts(summary["labels"])),
             ("fallback (uncertain)", f"{summary['uncertain']} ({'-' if rate is None else f'{rate * 100:.1f}%'})"),
             ("rejected frames while deciding items", _counts(summary["reject_reasons"])),
             ("rejected frames since the sorter started", _counts(since_start)),
             ("stuck events since the sorter started", stuck),
             ("latency", f"p50 {summary['latency_ms_p50']} ms, p95 {summary['latency_ms_p95']} ms")]
    table = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in facts)
    body = (f'<div class="box"><table id="today-facts">{table}</table></div>'
            f'<div class="box"><h2>Items per hour by bin (UTC)</h2>'
            f'{plots.stacked_bars("items per hour by bin", labels, per_bin)}'
            f'<h2>Fallback rate per hour (UTC)</h2>{plots.rate_bars("fallback rate per hour", labels, rates)}</div>'
            f'<h2>As <code>waste-sorter logs --since today --summary</code> says it</h2>'
            f'<pre class="box" id="summary">{escape(format_summary(summary))}</pre>')
    return layout("Today", "today", body)


# ---------------------------------------------------------------- label

LABEL_SCRIPT = """
const token=document.querySelector('meta[name=csrf-token]').content;
const msg=t=>{document.getElementById('message').textContent=t};
const cards=()=>[...document.querySelectorAll('.card:not([hidden])')];
let current=null;
function pick(card){if(current)current.classList.remove('current');current=card||null;
 if(current){current.classList.add('current');current.scrollIntoView({block:'nearest'})}
 else if(!document.querySelector('.card:not([hidden])'))location.reload()}
function post(url,data){return fetch(url,{method:'POST',headers:{'X-CSRF-Token':token,
 'Content-Type':'application/x-www-form-urlencoded'},body:new URLSearchParams(data)})
 .then(r=>r.text().then(t=>({ok:r.ok,status:r.status,text:t})))}
function left(n){document.getElementById('left').textContent=n}
function label(card,name){post('/api/label',{id:card.dataset.id,label:name}).then(r=>{
 if(r.ok){const j=JSON.parse(r.text);left(j.left);msg('capture '+j.id+': '+j.label);
  const next=cards()[cards().indexOf(card)+1];card.hidden=true;pick(next||cards()[0])}
 else if(r.status==404){msg(r.text);const next=cards()[cards().indexOf(card)+1];card.hidden=true;pick(next||cards()[0])}
 else msg(r.text)})}
function undo(){post('/api/undo',{}).then(r=>{if(!r.ok){msg(r.text);return}const j=JSON.parse(r.text);left(j.left);
 msg('undone: capture '+j.id+(j.label?' is '+j.label+' again':' is unlabelled again'));
 const card=document.querySelector('.card[data-id="'+j.id+'"]');if(card&&!j.label){card.hidden=false;pick(card)}})}
function skip(){const c=cards();if(current)pick(c[(c.indexOf(current)+1)%c.length])}
document.addEventListener('keydown',e=>{if(e.ctrlKey||e.metaKey||e.altKey)return;
 if(e.key==='u'||e.key==='Backspace'||e.key==='z'){e.preventDefault();undo();return}
 if(!current)return;if(e.key==='s'||e.key==='ArrowRight'){e.preventDefault();skip();return}
 const b=current.querySelector('button[data-key="'+e.key+'"]');if(b){e.preventDefault();label(current,b.dataset.label)}});
document.addEventListener('click',e=>{const b=e.target.closest('button[data-label]');
 if(b)label(b.closest('.card'),b.dataset.label);else{const c=e.target.closest('.card');if(c)pick(c)}});
document.getElementById('undo').addEventListener('click',undo);
pick(cards()[0]);
"""


def _card(capture: Capture) -> str:
    frames = "".join(f'<img src="/captures/{escape(name)}" alt="frame {escape(name)} (gone)" loading="lazy">'
                     for name in capture.frames)
    top3 = ", ".join(f"{escape(name)} {_num(p)}" for name, p in top3_of(capture))
    r = capture.record
    buttons = "".join(f'<button data-key="{key}" data-label="{escape(name)}">{key} {escape(name)}</button>'
                      for key, name in zip(CLASS_KEYS, capture.classes))
    buttons += f'<button data-key="0" data-label="{SKIP}">0 no item ({SKIP})</button>'
    reason = f", {escape(str(r.get('reason')))}" if r.get("reason") else ""
    return (f'<div class="card" data-id="{capture.id}" id="capture-{capture.id}"><div>{frames}</div>'
            f'<div><b>capture {capture.id}</b> — top-3: {top3} (margin {margin(capture):.2f})</div>'
            f'<div class="small">item #{escape(str(r.get("item", "?")))} at {escape(capture.ts)}: '
            f'{escape(str(r.get("label") or "-"))} -> {escape(str(r.get("bin", "?")))}{reason}; '
            f'captured as {escape(capture.why)}</div><div>{buttons}</div></div>')


def label_page(queue: list[Capture], token: str, problem: str = "") -> str:
    if problem:
        return layout("Label captures", "label", f'<p class="warn">{escape(problem)}</p>')
    cards = "".join(_card(c) for c in queue[:GRID])
    help_ = ("keys: 1-6 the class on the highlighted capture, 0 no item worth learning from, s or → skip, "
             "u or Backspace undo; or click")
    body = (f'<p><b id="left">{len(queue)}</b> unlabelled captures left, biggest doubt first. '
            f'<button id="undo">undo</button></p><p class="small">{help_}</p><p id="message"></p>'
            f'<div class="grid">{cards or "<p>nothing to label</p>"}</div>')
    return layout("Label captures", "label", body, token=token, script=LABEL_SCRIPT if cards else "")


def json_body(value: Any) -> bytes:
    return (json.dumps(value) + "\n").encode()
