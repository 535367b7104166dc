"""`rig down`: stop a stack that `rig up --native --detach` left running."""

from __future__ import annotations

import argparse

from rig import native
from rig.console import err, out
from rig.up_cmd import add_run_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    down = sub.add_parser("down", help="stop a stack started by `rig up --native`")
    add_run_dir(down)
    down.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        native.down(args.run_dir, out)
    except native.StackError as exc:
        err(str(exc))
        return 1
    return 0
