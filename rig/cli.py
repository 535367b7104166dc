"""`rig`: the command line of the LiveKit voice-agent load rig. Every command is registered here,
from its own module, which exports `add_parser(subparsers)` and sets `func` (and, for a command
that hands its arguments on to another program, `passes_rest`)."""

from __future__ import annotations

import argparse
import re
import sys

from rig import down_cmd, explain_cmd, replay_cmd, report_cmd, run_cmd, sweep_cmd, up_cmd

COMMANDS = (up_cmd, down_cmd, replay_cmd, run_cmd, report_cmd, sweep_cmd, explain_cmd)
_NEGATIVE = re.compile(r"^-\d")  # a value like -30m or -1, not an option


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rig",
                                     description="Load-and-soak test rig for LiveKit voice agents.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def glue_negative_values(argv: list[str]) -> list[str]:
    """`--from -30m` as `--from=-30m`: argparse would take -30m for an option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and _NEGATIVE.match(arg):
            out[-1] += "=" + arg
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, rest = parser.parse_known_args(glue_negative_values(argv))
    if rest and not getattr(args, "passes_rest", False):
        parser.parse_args(argv)  # says which argument is unknown, and exits 2
    args.rest = rest
    args.command_line = " ".join(["rig", *argv])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
