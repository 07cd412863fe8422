"""Training throughput of specs/gpt.modc: tokens/s with modc's dualized optimizer vs AdamW.

One build, two optimizers, the same model code and random batches of byte tokens; rounds
alternate between the optimizers so machine noise hits both alike, and the medians are
compared. On CUDA, --bf16 runs the forward and backward passes under bf16 autocast and
--compile compiles the model (and dualized's step) with torch.compile, as train.py does.

--codegen compares model code instead, both trained by the dualized optimizer from the same
weights: the build's model.py against its attention written op by op (`emit_model(...,
fuse=False)`, as modc wrote it before attention was fused), or with --baseline against the
model.py and optimizer.py of another build of the same spec and sizes (an older modc's,
say; its parameters take this build's initial weights in order).
Usage: python bench/train_throughput.py [--size cpu|gpu] [--bf16] [--compile] [--json]
           [--codegen [--baseline OTHER_BUILD]]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import modc
from modc.codegen.model import emit_model

SPEC = Path(__file__).resolve().parent.parent / "specs" / "gpt.modc"
SIZES = {  # width, depth, heads, context, batch size
    "cpu": (256, 4, 4, 64, 16),
    "gpu": (768, 12, 12, 256, 64),
}


def median_tokens_per_second(model, optimizer, size, device, autocast, steps) -> float:
    """Median over `steps` timed steps (after 3 warm-up steps) of tokens per second."""
    *_, context, batch = size
    gen = torch.Generator(device=device).manual_seed(0)
    times = []
    for i in range(steps + 3):
        tokens = torch.randint(0, 128, (batch, context + 1), device=device, generator=gen)
        t = time.perf_counter()
        with autocast():
            logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t)
    return batch * context / statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=SIZES, default=None, help="default: gpu on CUDA, else cpu")
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile model and step")
    p.add_argument("--json", action="store_true")
    p.add_argument("--codegen", action="store_true", help="compare model code, not optimizers")
    p.add_argument("--baseline", type=Path, help="with --codegen: another build's folder")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = SIZES[args.size or ("gpu" if device.type == "cuda" else "cpu")]
    width, depth, heads, context, _ = size
    params = {"vocab": 128, "width": width, "depth": depth, "heads": heads, "context": context}
    build = modc.build(SPEC, params)

    def autocast():
        if args.bf16:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    runs = {}
    if args.codegen:
        torch.manual_seed(0)
        weights = [p.detach() for p in build.model.build_model().parameters()]
        for kind, (model_code, optimizer_code) in _codes(build, params, args.baseline).items():
            model = model_code.build_model()
            with torch.no_grad():
                for p, w in zip(model.parameters(), weights, strict=True):
                    p.copy_(w)
            model.to(device)
            optimizer = optimizer_code.make_optimizer(model, 0.05, compile=args.compile)
            runs[kind] = (torch.compile(model) if args.compile else model, optimizer)
    for kind, lr in [] if args.codegen else [("dualized", 0.05), ("adamw", 1e-3)]:
        torch.manual_seed(0)
        model = build.model.build_model().to(device)
        optimizer = build.optimizer.make_optimizer(
            model, lr, kind=kind, compile=args.compile and kind == "dualized"
        )
        runs[kind] = (torch.compile(model) if args.compile else model, optimizer)
    rates: dict[str, list[float]] = {kind: [] for kind in runs}
    for _ in range(args.rounds):
        for kind, (model, optimizer) in runs.items():
            rates[kind].append(
                median_tokens_per_second(model, optimizer, size, device, autocast, args.steps)
            )
    tps = {kind: statistics.median(r) for kind, r in rates.items()}
    out = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "params": params,
        "bf16": args.bf16,
        "compile": args.compile,
        "tokens_per_second": tps,
    }
    a, b = ("this", "baseline") if args.codegen else ("dualized", "adamw")
    out[f"ratio_{a}_vs_{b}"] = tps[a] / tps[b]
    if args.codegen:
        out["baseline"] = str(args.baseline or "this build's model, attention op by op")
    if args.json:
        print(json.dumps(out))
        return
    print(f"device {out['device']}, GPT {params}, bf16 {args.bf16}, compile {args.compile}")
    if args.codegen:
        print(f"  model code: this build's vs {out['baseline']}, both dualized")
    for kind, rate in tps.items():
        print(f"  {kind:<9} {rate:10.0f} tokens/s (median)")
    print(f"  {a} / {b} = {out[f'ratio_{a}_vs_{b}']:.2f}")


def _codes(build: modc.Build, params: dict, baseline: Path | None) -> dict[str, tuple]:
    """(model, optimizer) modules: this build's, and the baseline's: another build's
    folder, or this build's model with attention op by op (its optimizer: names match)."""
    if baseline is not None:
        other = (_module(baseline / f"{n}.py", f"baseline_{n}") for n in ("model", "optimizer"))
        return {"this": (build.model, build.optimizer), "baseline": tuple(other)}
    folder = Path(tempfile.mkdtemp())
    (folder / "model.py").write_text(emit_model(modc.load(SPEC, params)[0], fuse=False))
    explicit = _module(folder / "model.py", "baseline_model")
    return {"this": (build.model, build.optimizer), "baseline": (explicit, build.optimizer)}


def _module(path: Path, name: str):
    """Import a model.py by its path."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    main()
