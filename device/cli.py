"""The ``waste-sorter`` command.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``main(args) -> int``; only the chosen one is imported, so the device commands never import
torch (``train``, ``export`` and ``quantize`` need the ``train`` extra).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from device.errors import SorterError, first_line

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("device.commands.run", "sort items from a camera or a recorded scene"),
    "calibrate": ("calibration.cli", "recalibrate exposure and the empty-board reference"),
    "logs": ("device.commands.logs", "read, follow, filter and summarise the sort log"),
    "status": ("device.commands.status", "is the sorter running, what did it do today"),
    "mqtt": ("device.commands.mqtt", "publish the sort log and the bin's state to an MQTT broker"),
    "fleet": ("device.commands.fleet", "one line per bin on an MQTT broker: state, items, faults"),
    "captures": ("device.commands.captures", "list, view, label and export the items the sorter captured"),
    "web": ("device.commands.web", "the technician's page: the camera, today, labelling captures"),
    "demo-scene": ("device.commands.demo_scene", "render a demo video of items from labelled photos"),
    "score-scene": ("device.commands.score_scene", "score a sort log against a demo scene's truth file"),
    "bench": ("device.commands.bench", "measure per-frame cost, model latency and memory"),
    "evaluate": ("export.evaluate", "accuracy and confusion of a model on a photo folder"),
    "train": ("export.train", "train the classifier (needs the train extra)"),
    "export": ("export.onnx_export", "export a checkpoint to ONNX with its contract"),
    "quantize": ("export.quantize", "int8 static quantization with an accuracy guard"),
    "soup": ("export.soup", "average the weights of runs that share a start into one model"),
}

TRAIN_EXTRA = ("train", "export", "quantize", "soup")  # need torch: pip install 'waste-sorter[train]'
MQTT_EXTRA = ("mqtt", "fleet")  # need paho-mqtt: pip install 'waste-sorter[mqtt]'


def version() -> str:
    """The installed package's version ("unknown" when run from a tree that was never installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("waste-sorter")
    except PackageNotFoundError:
        return "unknown"


def _usage() -> str:
    lines = ["usage: waste-sorter [-v] [--version] COMMAND [options]   (waste-sorter COMMAND --help for more)",
             "", "  -v, --verbose  debug logging (before or after COMMAND)", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = False
    while argv and argv[0] in ("-v", "--verbose", "--version"):
        if argv.pop(0) == "--version":
            print(f"waste-sorter {version()}")
            return 0
        verbose = True
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"waste-sorter: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, help_ = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = ("pip install 'waste-sorter[train]'" if name in TRAIN_EXTRA else
                "pip install 'waste-sorter[mqtt]'" if name in MQTT_EXTRA else "reinstall waste-sorter")
        print(f"waste-sorter {name}: missing dependency {exc.name or first_line(exc)!r} ({hint})", file=sys.stderr)
        return 3
    parser = argparse.ArgumentParser(prog=f"waste-sorter {name}", description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    args.verbose = args.verbose or verbose
    setup_logging(args.verbose)
    try:
        return int(module.main(args) or 0)
    except SorterError as exc:
        print(f"waste-sorter {name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
