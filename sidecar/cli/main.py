"""``bnn-sidecar`` entry point: the only place that configures logging.

Each subcommand is one module in this package exposing ``add_parser(subparsers)``
and ``run(args) -> int``. Modules are imported lazily so ``bnn-sidecar flows`` never
imports torch or onnxruntime.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from sidecar import __version__
from sidecar.errors import SidecarError

#: subcommand name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "flows": ("sidecar.cli.flows", "read records of any format and write canonical flows as JSON lines"),
    "score": ("sidecar.cli.score", "score records with the model and write one JSON verdict per flow"),
    "train": ("sidecar.cli.train", "train the BNN (needs the 'train' extra)"),
    "evaluate": ("sidecar.cli.evaluate", "evaluate a model and write a report directory"),
    "pack": ("sidecar.cli.pack", "derive the numpy engine's bit-packed file from an ONNX model"),
    "bench": ("sidecar.cli.bench", "benchmarks: parse, model and end-to-end throughput, RSS"),
    "run": ("sidecar.cli.run", "run the sidecar service from a TOML config"),
    "ship": ("sidecar.cli.ship", "follow records on the sensor and push batches over ZeroMQ"),
    "show-config": ("sidecar.cli.show_config", "print the effective config and where each value came from"),
    "demo": ("sidecar.cli.demo", "score the bundled real records end to end and print a table"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bnn-sidecar", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--version", action="version", version=f"bnn-sidecar {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (modname, helptext) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=helptext, add_help=False)
            continue
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name is not None and exc.name.startswith("sidecar"):
                continue  # subcommand not built yet
            raise
        sp = sub.add_parser(name, help=helptext, description=helptext)
        mod.add_parser(sp)
        sp.set_defaults(_module=mod)
    return p


def configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=cmd if cmd in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    configure_logging(args.verbose, args.quiet)
    try:
        rc: int = args._module.run(args)
        return rc
    except SidecarError as exc:
        logging.getLogger("bnn-sidecar").error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
