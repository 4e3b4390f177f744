"""The ``pneumonitor`` command.

Each sub-command lives in its own module of this package and exposes ``register(subparsers)``, which adds its
``argparse`` sub-parser through :func:`add_command` (``func``: a callable taking the parsed namespace and returning an
exit code; the description: the module docstring).
Modules are discovered automatically, so adding a sub-command never touches this file.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from typing import Callable

from pneumonitor import __version__


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    run: Callable[[argparse.Namespace], int],
    *,
    help: str,
    description: str,
) -> argparse.ArgumentParser:
    """The sub-parser of sub-command NAME, which calls RUN; DESCRIPTION (the command module's docstring) is printed
    as written, so its paragraphs stay paragraphs."""
    parser = subparsers.add_parser(
        name, help=help, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.set_defaults(func=run)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pneumonitor",
        description="Pneumonia detection, per-lung severity (0-8) and monitoring on chest X-rays. Not for clinical use.",
    )
    parser.add_argument("--version", action="version", version=f"pneumonitor {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
