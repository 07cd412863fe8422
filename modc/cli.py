"""The `modc` command: compile a spec, or print its bounds."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from modc.errors import ModcError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="modc", description="Compile a network spec into a certified optimizer."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument("spec", help="a .yaml or .modc spec file")
        c.add_argument(
            "-p",
            "--param",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="override a parameter of the spec (repeatable)",
        )
        return c

    c = command("compile", "generate model.py, optimizer.py, certificate.py and train.py")
    c.add_argument("-o", "--out", help="build directory (default: build/NAME)")
    b = command("bounds", "print mass, sensitivity and every atom's target")
    b.add_argument("--format", choices=("text", "json"), default="text")
    b.add_argument(
        "--free",
        default="",
        metavar="NAMES",
        help="comma-separated parameters to keep as symbols",
    )
    return p


def run(argv: Sequence[str]) -> int:
    """Run one command; a ModcError propagates to main()."""
    from modc.compiler import compile_spec, load
    from modc.theory.report import to_json, to_text

    args = _parser().parse_args(argv)
    if args.command == "compile":
        out = compile_spec(args.spec, args.out, args.param)
        print(f"wrote {out}/ (model.py, optimizer.py, certificate.py, train.py, spec.json)")
        print(f"train it: python {out}/train.py")
        return 0
    free = [name.strip() for name in args.free.split(",") if name.strip()]
    network, analysis = load(args.spec, args.param, free)
    if args.format == "json":
        print(json.dumps(to_json(network, analysis), indent=2))
    else:
        print(to_text(network, analysis))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user errors print `file:line:col: error: ...` and exit with status 2."""
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except ModcError as e:
        print(e.render(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
