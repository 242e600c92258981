"""``bnn-sidecar show-config``: the effective config and where each value came from."""

from __future__ import annotations

import argparse
import json
from typing import Any

from sidecar.cli.run import add_config_args, config_from_args
from sidecar.config import effective


def add_parser(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument("--json", action="store_true", help="JSON instead of annotated TOML")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v))


def render_toml(eff: dict[str, Any]) -> str:
    lines: list[str] = []
    for sec in ("sidecar", "metrics"):
        lines.append(f"[{sec}]")
        for key, d in eff[sec].items():
            note = d["origin"]
            if "resolved" in d and d["resolved"] != d["value"]:
                note += f"; resolved: {d['resolved']}"
            lines.append(f"{key} = {_toml_value(d['value'])}  # {note}")
        lines.append("")
    for role in ("source", "sink"):
        for t in eff[role]:
            lines.append(f"[[{role}]]  # {t['origin']}")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in t.items() if k != "origin")
            lines.append("")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    eff = effective(cfg)
    if args.json:
        print(json.dumps(eff, indent=2))
    else:
        print(render_toml(eff), end="")
    return 0
