"""The technician's console over SSH: every step is printed as it happens, and a prompt waits
for Enter only where a person is at a terminal (never with ``--yes``)."""

from __future__ import annotations

import argparse
import sys


def say(text: str) -> None:
    print(text, flush=True)


def pause(args: argparse.Namespace, text: str) -> None:
    say(text)
    if not args.yes and sys.stdin is not None and sys.stdin.isatty():
        input("   press Enter when ready (Ctrl-C aborts, nothing is written) ")
