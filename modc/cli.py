"""The `modc` command: one small function per subcommand, user errors as compiler messages."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from modc.errors import ModcError


def cmd_compile(args: argparse.Namespace) -> int:
    from modc.codegen.build import folder_name, write_build
    from modc.compiler import load_with_provenance
    from modc.provenance import stale

    made, network, analysis = load_with_provenance(args.spec, args.param)
    out = Path("build") / folder_name(network.name) if args.out is None else Path(args.out)
    before = stale(out, made)
    write_build(network, analysis, out, args.force, made)
    files = "model.py, optimizer.py, certificate.py, train.py and the files it uses"
    print(f"wrote {out}/ ({files}, spec.json)")
    if before:
        print(f"replaced a stale build: {'; '.join(before)}")
    print(f"train it: python {out}/train.py")
    return 0


def cmd_bounds(args: argparse.Namespace) -> int:
    from modc.compiler import load
    from modc.theory.latex import to_latex
    from modc.theory.report import to_json, to_text

    free = [name.strip() for name in args.free.split(",") if name.strip()]
    network, analysis = load(args.spec, args.param, free)
    if args.format == "json":
        print(json.dumps(to_json(network, analysis), indent=2))
    elif args.format == "latex":
        print(to_latex(network, analysis))
    else:
        print(to_text(network, analysis))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from modc.sweep import sweep
    from modc.sweep.grid import MAX_STEPS
    from modc.sweep.runner import MAX_JOBS, usable_cores, visible_gpus

    gpus = visible_gpus()
    if args.jobs is None:  # one run per GPU, else one per core (at most 8)
        args.jobs = len(gpus) or min(usable_cores(), 8)
    if min(args.jobs, args.seeds, args.steps) < 1:
        raise ModcError("--jobs, --seeds and --steps must be at least 1")
    if args.jobs > MAX_JOBS:
        raise ModcError(f"--jobs {args.jobs}: at most {MAX_JOBS} runs in parallel")
    if args.steps > MAX_STEPS:
        raise ModcError(
            f"--steps: a sweep's runs take at most {MAX_STEPS} steps; train one setting "
            "longer with its train.py"
        )
    train_args = ["--steps", str(args.steps)] + (["--data", args.data] if args.data else [])
    out = Path(args.out or Path("sweeps") / Path(args.spec).stem)
    optimizers = [o.strip() for o in args.optimizer.split(",") if o.strip()]
    start = time.monotonic()
    text = sweep(
        Path(args.spec),
        args.vary,
        args.lr or [],
        optimizers,
        out,
        train_args,
        args.jobs,
        args.seeds,
        args.param,
        args.set,
        gpus,
    )
    minutes, seconds = divmod(round(time.monotonic() - start), 60)
    print(text)
    on = f" on {len(gpus)} GPUs" if gpus else ""
    print(
        f"wrote {out}/results.csv and {out}/transfer.png "
        f"({minutes} m {seconds:02d} s with --jobs {args.jobs}{on})"
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from modc.check import check_table
    from modc.compiler import load_with_provenance
    from modc.provenance import stale

    made, network, analysis = load_with_provenance(args.spec, args.param)
    print(check_table(network, analysis))
    if args.build is None:
        return 0
    why = stale(args.build, made)
    if why is None:
        raise ModcError(f"'{args.build}' holds no modc build (no readable spec.json)")
    if why:
        print(f"the build in {args.build} is stale: {'; '.join(why)}")
        return 1
    print(f"the build in {args.build} is up to date (modc {made['modc']}, same spec files, -p)")
    return 0


def cmd_ops(args: argparse.Namespace) -> int:
    from modc.catalog import describe, ops_text
    from modc.ops import OPS

    if args.format == "json":
        print(json.dumps([describe(op) for op in OPS.values()], indent=2, ensure_ascii=False))
    else:
        print(ops_text())
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from modc.compiler import load
    from modc.graph.view import to_dot, to_graph_json

    network, _ = load(args.spec, args.param)
    text = to_dot(network) if args.format == "dot" else json.dumps(to_graph_json(network))
    return _emit(text if text.endswith("\n") else text + "\n", args.out, args.force)


def cmd_convert(args: argparse.Namespace) -> int:
    from modc.spec.convert import convert

    if args.param:
        raise ModcError("convert writes the spec as it is; -p does not apply")
    return _emit(convert(args.spec, args.to), args.out, args.force)


def _emit(text: str, out: str | None, force: bool) -> int:
    """Print `text` (no `out`, or `-`), or write it to the file `out`, which must not exist
    unless `force`."""
    from modc.fileio import reason, write_atomic

    if not out or out == "-":
        sys.stdout.write(text)
        return 0
    try:
        if Path(out).is_dir():
            raise ModcError(f"'{out}' is a folder; -o takes a file name")
        if Path(out).exists() and not Path(out).is_file():  # never replace /dev/null
            raise ModcError(f"'{out}' is not a regular file; leave out -o to print")
        if Path(out).exists() and not force:
            raise ModcError(f"'{out}' exists; pass --force to replace it")
        write_atomic(out, text)
    except OSError as e:
        raise ModcError(f"cannot write '{out}': {reason(e)}") from None
    return 0


def _parser() -> argparse.ArgumentParser:
    from modc import __version__

    p = argparse.ArgumentParser(
        prog="modc", description="Compile a network spec into a certified optimizer."
    )
    p.add_argument("--version", action="version", version=f"modc {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.set_defaults(run=run)
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

    c = command(
        "compile", cmd_compile, "generate model.py, optimizer.py, certificate.py and train.py"
    )
    c.add_argument("-o", "--out", help="build directory (default: build/NAME)")
    c.add_argument(
        "--force",
        action="store_true",
        help="write into OUT even if it holds files that are not a build of this spec",
    )

    b = command(
        "bounds",
        cmd_bounds,
        "print mass, sensitivity, every atom's target, the modular norm and the bounds",
    )
    b.add_argument("--format", choices=("text", "json", "latex"), default="text")
    b.add_argument(
        "--free", default="", metavar="NAMES", help="comma-separated parameters to keep as symbols"
    )

    s = command(
        "sweep", cmd_sweep, "train a grid of sizes × settings × learning rates to check transfer"
    )
    s.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="a parameter and its values, e.g. width=32,64,128 (repeatable)",
    )
    s.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SETTING=V1,V2,...",
        help="an optimizer setting and its values, e.g. decay=0.5,0.8,1 or clip=none,1 "
        "(repeatable)",
    )
    s.add_argument(
        "--lr",
        action="append",
        metavar="[KIND=]GRID",
        help="LO:HI[:FACTOR] geometric grid (default factor 2) or a list a,b,c; KIND=GRID for "
        "one optimizer (repeatable; default: a range per kind; at most 64 points a grid)",
    )
    s.add_argument("--steps", type=int, default=200, help="steps per run")
    s.add_argument("--optimizer", default="dualized", help="comma-separated optimizer kinds")
    s.add_argument("--data", help="mnist, shakespeare, synthetic or PATH (default: the spec's)")
    s.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs in parallel, each with cores/jobs threads; on GPUs each job has one visible "
        "GPU (CUDA_VISIBLE_DEVICES), job i the GPU i mod count (default: one per GPU; "
        "without GPUs one per core, at most 8)",
    )
    s.add_argument("--seeds", type=int, default=1, help="seeds per grid point")
    s.add_argument("-o", "--out", help="sweep directory (default: sweeps/SPEC)")

    k = command("check", cmd_check, "validate a spec and print its modules, shapes and theory")
    k.add_argument(
        "--build",
        metavar="DIR",
        help="also say whether the build in DIR is stale: made by another modc, from other "
        "spec files or -p (exit status 1 if it is)",
    )
    o = sub.add_parser(
        "ops",
        help="list every operation: arguments, mass, sensitivity, conditions",
        description="List every operation of the library (modc/ops) with its arguments, mass, "
        "sensitivity and the conditions its bounds need.",
    )
    o.set_defaults(run=cmd_ops)
    o.add_argument("--format", choices=("text", "json"), default="text")
    g = command("graph", cmd_graph, "export the module graph as Graphviz DOT or networkx JSON")
    g.add_argument("--format", choices=("dot", "json"), default="dot")
    g.add_argument("-o", "--out", help="write to this file (default, or -: print it)")
    g.add_argument("--force", action="store_true", help="replace OUT if it exists")
    v = command("convert", cmd_convert, "write a spec in the other form (YAML ↔ .modc)")
    v.add_argument("--to", choices=("yaml", "modc"), required=True)
    v.add_argument("-o", "--out", help="write to this file (default, or -: print it)")
    v.add_argument("--force", action="store_true", help="replace OUT if it exists")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user errors print `file:line:col: error: ...` and exit with status 2."""
    for stream in (sys.stdout, sys.stderr):  # a name no terminal can show is escaped
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return args.run(args)
    except ModcError as e:
        print(e.render(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`modc bounds ... | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # a file the system refused that no command foresaw
        where = f" '{e.filename}'" if e.filename else ""
        print(f"modc: error: cannot use{where}: {e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
