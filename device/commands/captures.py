"""List, view, label and export the items the sorter captured (``[capture]`` in the config).

examples:
  waste-sorter captures list --unlabelled          the last 20 captures still to label
  waste-sorter captures sheet --out sheet.png      their contact sheet, numbered (scp it, view it)
  waste-sorter captures label 17 18 21-24 glass    label captures 17, 18 and 21 to 24 as glass
  waste-sorter captures label 19 skip              19 shows no item worth learning from
  waste-sorter captures export --out export/       labelled captures as an ImageFolder to train on

The capture folder is --dir, else --config's [capture].dir, else the device's
/var/lib/waste-sorter/captures. Labels are written to labels.json in that folder, so label as
the user the sorter runs as: sudo -u waste-sorter waste-sorter captures label ...
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import TextIO

from device.commands.capture_export import export_labelled
from device.commands.capture_sheet import contact_sheet, write_sheet
from device.capture_store import SKIP, Capture, is_folder_name, read_captures, sidecar_name, write_labels
from device.config import CaptureConfig
from device.errors import DataError, UsageError
from device.commands.logs import make_filter, parse_since
from device.safe_open import show_path

log = logging.getLogger(__name__)

_ID = re.compile(r"^(\d{1,12})(?:-(\d{1,12}))?$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    for where, default in ((parser, None), (common, argparse.SUPPRESS)):  # before or after ACTION
        where.add_argument("--dir", type=Path, default=default,
                           help=f"capture folder (default: from --config, else {CaptureConfig().dir})")
        where.add_argument("--config", type=Path, default=default,
                           help="config file; its [capture].dir is the default folder")
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--since", help="only captures since a date/time or an age (2h, 30m, 1d)")
    filters.add_argument("--label", help="only captures the classifier called LABEL")
    filters.add_argument("--bin", help="only captures sent to BIN")
    filters.add_argument("--reason", help="only captures whose reason contains TEXT ('any': any reason)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[common, filters], help="id, time, prediction, label")
    listing.add_argument("-n", "--lines", type=int, default=20, metavar="N", help="the last N captures (20; 0: all)")
    state = listing.add_mutually_exclusive_group()
    state.add_argument("--unlabelled", action="store_true", help="only captures without a label")
    state.add_argument("--labelled", action="store_true", help="only labelled captures")
    listing.add_argument("--json", action="store_true", help="JSON lines")
    sheet = actions.add_parser("sheet", parents=[common, filters], help="contact sheet PNG of unlabelled captures")
    sheet.add_argument("--out", type=Path, default=Path("captures-sheet.png"), help="PNG (captures-sheet.png)")
    sheet.add_argument("--count", type=int, default=40, help="the newest N captures (40)")
    sheet.add_argument("--all", action="store_true", help="labelled captures too")
    label = actions.add_parser("label", parents=[common], help="label captures: ID [ID ...] CLASS")
    label.add_argument("ids_and_class", nargs="+", metavar="ID|CLASS",
                       help=f"capture ids (17, or a range 17-24), then the class (or '{SKIP}')")
    export = actions.add_parser("export", parents=[common], help="labelled captures as an ImageFolder")
    export.add_argument("--out", type=Path, required=True, help="folder to write (or bring up to date)")


def capture_folder(args: argparse.Namespace) -> Path:
    """``--dir``, else the config's ``[capture].dir``, else the device's folder."""
    if args.dir is not None:
        return args.dir
    if args.config is not None:
        from device.config import load_config

        return Path(load_config(args.config).capture.dir)
    return Path(CaptureConfig().dir)


def select(captures: list[Capture], args: argparse.Namespace, now: float | None = None) -> list[Capture]:
    """The captures that pass the sort-log filters and the label state asked for."""
    keep = make_filter(parse_since(args.since, now) if args.since else None, args.label, args.bin, args.reason)
    chosen = [c for c in captures if keep(c.record)]
    if getattr(args, "unlabelled", False):
        chosen = [c for c in chosen if not c.label]
    if getattr(args, "labelled", False):
        chosen = [c for c in chosen if c.label]
    return chosen


def format_capture(capture: Capture) -> str:
    said = f"{capture.predicted or '-'} {capture.confidence:.2f}"
    return f"{capture.id:>6}  {capture.ts[:19]}Z  {said:<16} {capture.why:<9}  {capture.label or '-'}"


def parse_ids(tokens: list[str], existing: set[int]) -> list[int]:
    """Capture ids from ``17`` and ``17-24`` tokens; a single id must exist, a range takes the
    captures that exist in it. UsageError naming the token otherwise."""
    ids: list[int] = []
    for token in tokens:
        match = _ID.match(token)
        if not match:
            raise UsageError(f"label: {token!r} is not a capture id (17) or a range (17-24)")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else None
        if last is None:
            if first not in existing:
                raise UsageError(f"label: no capture {first} in the folder")
            ids.append(first)
            continue
        found = [i for i in sorted(existing) if first <= i <= last]
        if last < first or not found:
            raise UsageError(f"label: no capture in the range {token}")
        ids += found
    return list(dict.fromkeys(ids))


def canonical_label(class_name: str, chosen: list[Capture]) -> str:
    """``class_name`` as the models of ``chosen`` spell it (or 'skip') when it differs from that
    only in case; otherwise as given (then refused, when it is no class, by the caller)."""
    spellings = {SKIP} | {c for capture in chosen for c in capture.classes}
    same = [name for name in spellings if name.casefold() == class_name.casefold()]
    return same[0] if len(same) == 1 and class_name not in spellings else class_name


def label_captures(folder: Path, chosen: list[Capture], class_name: str) -> dict[int, str]:
    """Label ``chosen`` (captures of ``folder``) as ``class_name`` (a class of the model that
    decided each, or 'skip'): the one way labels are written (``captures label`` and the web
    page's label and undo). The labels it replaced (id -> old). UsageError for a label that is
    not a class, DataError for one that cannot be a folder's name. The class is matched whatever
    its case (``Glass`` is glass), as ``logs --bin``/``--label`` and the filters here match."""
    class_name = canonical_label(class_name, chosen)
    if class_name != SKIP:
        for capture in chosen:
            if class_name not in capture.classes:
                raise UsageError(f"label: {class_name!r} is not a class of the model that decided capture "
                                 f"{capture.id} ({', '.join(capture.classes)}); '{SKIP}' for no item worth "
                                 "learning from")
        if chosen and not is_folder_name(class_name):  # the export would make a folder of it
            raise DataError(f"{show_path(folder / sidecar_name(chosen[0].id))}: class {class_name!r} is not a "
                            "plain folder name (empty, a leading '.', a '/' or a NUL): it cannot be a label")
    return write_labels(folder, {c.id: class_name for c in chosen})


def label(folder: Path, captures: list[Capture], tokens: list[str], out: TextIO) -> None:
    if len(tokens) < 2:
        raise UsageError("label: give one or more capture ids, then the class (e.g. label 17 18 glass)")
    *id_tokens, class_name = tokens
    by_id = {c.id: c for c in captures}
    ids = parse_ids(id_tokens, set(by_id))
    chosen = [by_id[i] for i in ids]
    class_name = canonical_label(class_name, chosen)
    replaced = label_captures(folder, chosen, class_name)
    out.write(f"{class_name}: {', '.join(map(str, ids))}\n")
    for capture_id, old in replaced.items():
        out.write(f"  {capture_id} was {old}\n")


def main(args: argparse.Namespace) -> int:
    return run_captures(args, sys.stdout)


def run_captures(args: argparse.Namespace, out: TextIO, *, now: float | None = None) -> int:
    """`waste-sorter captures` with ``args`` (its parsed arguments), writing to ``out``;
    :func:`main` calls it with stdout and the default: ``now`` (seconds since the epoch; default:
    the time) is what ``--since 2h`` counts back from."""
    folder = capture_folder(args)
    captures = read_captures(folder)
    if args.action == "list":
        if args.lines < 0:
            raise UsageError(f"-n {args.lines}: must be >= 0")
        chosen = select(captures, args, now)
        chosen = chosen[-args.lines:] if args.lines else chosen
        for capture in chosen:
            out.write((json.dumps(capture.to_json(), separators=(",", ":")) if args.json
                       else format_capture(capture)) + "\n")
        if not chosen and not args.json:
            print(f"waste-sorter captures: no captures in {show_path(folder)} match", file=sys.stderr)
    elif args.action == "sheet":
        if args.count < 1:
            raise UsageError(f"--count {args.count}: must be at least 1")
        args.unlabelled = not args.all
        pool = select(captures, args, now)
        chosen = pool[-args.count:]
        if not chosen:
            print(f"waste-sorter captures: nothing to show: no {'' if args.all else 'unlabelled '}captures "
                  f"in {show_path(folder)} match", file=sys.stderr)
            return 1
        write_sheet(args.out, contact_sheet(folder, chosen))
        out.write(f"wrote {args.out}: {len(chosen)} of {len(pool)} {'' if args.all else 'unlabelled '}captures, "
                  f"ids {chosen[0].id} to {chosen[-1].id}\n"
                  f"label them: waste-sorter captures label ID [ID ...] CLASS  (classes: "
                  f"{', '.join(chosen[-1].classes)}; or {SKIP})\n")
    elif args.action == "label":
        label(folder, captures, args.ids_and_class, out)
    elif args.action == "export":
        result = export_labelled(folder, captures, args.out)
        counts = ", ".join(f"{name} {n}" for name, n in result.per_class.items()) or "none labelled"
        out.write(f"exported {sum(result.per_class.values())} captures ({result.photos} photos) to {args.out}: "
                  f"{counts}; {result.copied} photos new, {result.removed} removed\n")
        if result.unreadable:
            out.write(f"left out (a frame unreadable): {', '.join(map(str, result.unreadable))}\n")
        if result.kept:
            out.write(f"kept from earlier exports (no longer in the capture folder): "
                      f"{', '.join(map(str, result.kept))}\n")
    return 0
