"""The technician's page: what the bin sees, what it sorted today, and labelling its captures.

    waste-sorter web --config /etc/waste-sorter/config.toml      serve on http://127.0.0.1:8080
    ssh -L 8080:localhost:8080 pi                                 then open http://localhost:8080

Pages: Now (the sorter's state, the ready light as the person at the bin sees it, the latest
camera frame, the last items), Today (items per hour by bin, the fallback rate, rejected frames,
stuck events: the figures of `logs --summary`), Label captures (unlabelled captures, biggest
doubt first; keys 1-6 label, u undo, s skip).

It serves on 127.0.0.1 only: anyone who can reach the port can see the camera and the sort log
and label captures. --bind 0.0.0.0 (or an address) exposes all of that to the network, without
a password; the systemd unit also allows only localhost (IPAddressAllow=) until a drop-in
changes it. Labels are written to the capture folder's labels.json: run it as the sorter's
user (the unit does).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from device.commands.captures import capture_folder
from device.config import CaptureConfig
from device.errors import UsageError
from device.commands.logs import resolve_log_path
from device.runtime_status import DEFAULT_STATUS_PATH
from device.web.server import WebServer
from device.web.sources import Sources

log = logging.getLogger(__name__)

DEFAULT_PORT = 8080


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bind", default="127.0.0.1",
                        help="address to serve on (127.0.0.1; any other exposes the camera, the log and labelling "
                             "to whoever reaches it, without a password)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port ({DEFAULT_PORT}; 0: any free one)")
    parser.add_argument("--config", type=Path, help="config file: its [log].path and [capture].dir")
    parser.add_argument("--log", type=Path, help="sort log (default: from --config, else the service's)")
    parser.add_argument("--status-file", type=Path, default=DEFAULT_STATUS_PATH,
                        help=f"the sorter's status file; frame.jpg beside it is the latest frame ({DEFAULT_STATUS_PATH})")
    parser.add_argument("--dir", type=Path, help=f"capture folder (default: from --config, else {CaptureConfig().dir})")


def sources_of(args: argparse.Namespace) -> Sources:
    return Sources(status_file=args.status_file, log_path=resolve_log_path(args.log, args.config),
                   capture_dir=capture_folder(args))


def main(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: must be 0 to 65535")
    sources = sources_of(args)
    try:
        server = WebServer((args.bind, args.port), sources)
    except OSError as exc:
        raise UsageError(f"cannot serve on {args.bind}:{args.port}: {exc.strerror or exc}") from None
    stopping = threading.Event()

    def stop(signum, _frame) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()  # not from serve_forever's thread

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with server:
        if not server.loopback_only:
            log.warning("serving on %s: the camera, the sort log and labelling are open to the network", args.bind)
        print(f"waste-sorter web: serving {server.url} (status {sources.status_file}, log {sources.log_path}, "
              f"captures {sources.capture_dir})", flush=True)
        server.serve_forever(poll_interval=0.5)
    return 0
