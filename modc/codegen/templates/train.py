"""Train the network that modc compiled into this directory. Run it from anywhere:

    python train.py                                # defaults from spec.json "train"
    python train.py --steps 2000 --lr 0.3 --schedule cosine --warmup 100
    python train.py --data my_data.csv.gz --out runs/mine
    python train.py --out runs/mine --resume       # continue a stopped run exactly
    python train.py --out runs/mine --resume --steps 4000  # extend a finished run
    python train.py --data shakespeare --sample 500 --temperature 0.8 --top-k 40
    python train.py --data house.csv --header --label-column price --loss mse
    python train.py --optimizer adamw --lr 1e-3    # a baseline, from the same build
    python train.py --constraint cap               # keep the spec's Lipschitz bound
    python train.py --optimizer muon --lr 0.02 --adamw-lr 3e-4 --beta2 0.95
    python train.py --device cuda --bf16 --compile # bf16 autocast, torch.compile
    python train.py --gns --batch-schedule gns     # noise scale; the batch follows it
    torchrun --nproc_per_node 8 train.py --batch-size 64  # 8 processes, data parallel
    torchrun --nproc_per_node 8 train.py --fsdp   # weights and optimizer state sharded

Optimizers (--optimizer; default: the spec's optimizer: section, else dualized):
    dualized              momentum, then each layer's dual map: every step has modular norm lr
    normalized:sgd        SGD, Adam or Adafactor, each update rescaled per layer to the
    normalized:adam       norm that dualized would give it
    normalized:adafactor
    adamw, muon           baselines: torch.optim.AdamW; torch.optim.Muon on the hidden
                          matrices + AdamW (--adamw-lr) on embeddings, head, gains, biases
    adafactor             Adafactor (Shazeer & Stern): relative step min(--lr, 1/sqrt(t)) times
                          each weight's RMS; try --lr 0.01
Every setting of the spec's optimizer: section has a flag (--momentum, --nesterov, --polar,
--weight-decay, --beta1, --beta2, --eps, --decay, --adamw-lr, --constraint) that overrides it;
the bound itself (optimizer.lipschitz or max_norm) is compiled into the caps. --constraint
cap (hard cap) or normalize (spectral normalisation) keeps every layer's Lipschitz bound
under that cap after every step, so that the certificate's bound holds throughout training.
A step whose loss or gradients are not finite is skipped: the weights and the optimizer's
state stay as they were, the metrics count it, and after --max-skips such steps in a row
the run stops (status 1).

Data (--data):
    mnist        data/mnist_5k.csv.gz next to this script: 5,000 digits, pixels scaled to [0, 1]
    synthetic    4,096 Gaussian inputs, labelled by a fixed random linear teacher; for a
                 sequence model, 65,536 tokens of a fixed random bigram chain
    shakespeare  data/shakespeare.txt next to this script: eight plays, 1.06 MB of ASCII
    PATH         your own data: a .csv or .csv.gz file, one example per line, numbers:
                 "feature, ..., feature, label", the label in --label-column (an index,
                 negative from the end, default -1; or a name in the header row); a first
                 row that is not all numbers is a header (--header / --no-header to say);
                 or a .pt file written by torch.save({"x": float tensor (N, *INPUT_SHAPE),
                 "y": long tensor (N,)}, PATH). Each example has as many features as the
                 model's input; labels are integers in [0, classes), and a label column
                 that holds one value only is refused (a pixel read as the label, say).
                 Or a .txt file: any text, read as bytes.
Loss (--loss, or the spec's train.loss): cross_entropy (classes, next bytes), or mse: the
mean squared error between the outputs and either the one-hot class (a label column) or,
for a CSV whose rows end in one number per output, those numbers (regression: eval_acc is
then empty). --clip-grad NORM clips the gradients' global ℓ2 norm (0: off, the default).
Labelled data (mnist, synthetic, .csv, .pt): inputs are standardised with the training
split's mean and std; 10% of each class is held out by a fixed generator, not --seed, so
held-out numbers compare across runs.
Text (shakespeare, .txt) trains a model from byte tokens, INPUT_SHAPE (context,), to
next-byte logits, OUTPUT_SHAPE (context, vocab): each byte is a token, so every byte must be
below vocab (128 for ASCII). The first 90% of the bytes trains, on windows at random offsets;
up to 256 fixed, non-overlapping windows spread over the last 10% are held out, so eval_loss
is the mean cross-entropy per token (nats) and eval_acc the next-byte accuracy.
--sample N prints N bytes of text from the trained model (--prompt, --temperature,
--top-k; also generate.py RUN). Batches go to the device one at a time, not the data set.

Several processes (torchrun; gloo on CPU, nccl on CUDA, one GPU a process): data parallel
with DDP. --batch-size is per process: a step's global batch is batch-size × processes ×
--grad-accum examples, the same examples whatever the number of processes, so a run of one
process with that global batch takes the same steps. The dualized optimizer deals its polar
factors out to the processes (each computed once) and gathers them. Rank 0 writes every
file; a collective that waits longer than --timeout seconds for a failed process fails.
--fsdp shards the weights, gradients and optimizer state over the processes (FSDP2): each
polar factor is computed on one process from the whole matrix; checkpoints are written by
every process with torch.distributed.checkpoint (a folder shards-STEP next to checkpoint.pt,
which names it), and evaluation and the certificate use the whole weights, on rank 0.

Output in --out (default runs/<name>):
    metrics.csv         step,loss,lr,eval_loss,eval_acc,lipschitz_upper,skipped: a row per
                        step; skipped counts the steps skipped so far. Losses stay on the
                        device and the rows are written every --log-every steps (and at
                        each checkpoint): no host sync per step for the log
    tensorboard/        with --tensorboard (needs the tensorboard package): the same scalars
    certificates.jsonl  the certificate's report every --certify-every steps, a JSON a line
    checkpoint.pt       model, optimizer (and --constraint cap's warm starts), scheduler,
                        step, args and their SHA-256; --resume checks it and continues
                        with the same batches, and on CPU ends with the same weights; a
                        damaged checkpoint is refused and left as it is.
                        --resume --steps N extends a run (finished or not) to N steps: the
                        lr schedule from then on is that of an N-step run, so with
                        --schedule constant it is one N-step run; a decaying schedule
                        rises again from where an N-step run would be
    train.lock          held while a run writes here: one --out takes one run at a time
    final.json          steps, train_loss, eval_loss, eval_acc, seconds; losses per token for text
    certificate.json    the Lipschitz certificate of the trained weights

Gradient noise scale (--gns; gns.py): every step, B_simple (McCandlish et al. 2018) of the
network's Gain and Bias atoms, a normalisation's learnable part, from per-example gradients
that the backward pass yields at almost no cost (Gray et al. 2024), goes to gns.csv (step,
tokens, batch, lr, and per group: bsimple, g2, trace; groups norm, Gain, Bias). --gns-total
adds exact per-example gradients of every weight (torch.func; slow): groups total and
total_KIND per atom kind. --batch-schedule linear:START->END (tokens) or gns[:MIN->MAX]
changes the batch (in micro-batches of --batch-size) within the tokens of the fixed run
(--steps × global batch), with the lr schedule counted in tokens and the lr scaled with
the batch as gns.py's lr_scale says.

Imports torch and the Python standard library only.
"""

import argparse
import contextlib
import ctypes
import hashlib
import inspect
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, NoReturn

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the files modc generated next to this one
from certificate import report  # noqa: E402
from data import NAMES, DataError, Dataset, load  # noqa: E402
from distributed import (  # noqa: E402
    data_parallel,
    gathered,
    join,
    launched,
    leave,
    load_shards,
    mean_over_ranks,
    micro_batches,
    prune_shards,
    ranks,
    save_shards,
    shard,
    sharded,
    share_work,
)
from generate import generate, prompt_tokens, text_of  # noqa: E402
from gns import log as log_gns  # noqa: E402
from gns import setup as setup_gns  # noqa: E402
from metrics import Metrics, Progress, start_metrics  # noqa: E402
from model import INPUT_SHAPE, OUTPUT_SHAPE, build_model  # noqa: E402
from optimizer import make_optimizer  # noqa: E402
from options import SETTINGS, batch_schedule, rules  # noqa: E402

try:
    import fcntl
except ImportError:  # Windows
    import msvcrt

    fcntl = None

FIELDS = ["step", "loss", "lr", "eval_loss", "eval_acc", "lipschitz_upper", "skipped"]
OUTPUTS = [  # the files in --out that are replaced whole
    "checkpoint.pt",
    "metrics.csv",
    "certificates.jsonl",
    "gns.csv",
    "final.json",
    "certificate.json",
    "sample.txt",
]
SPEC_OPTIMIZER = {
    name: p.default
    for name, p in inspect.signature(make_optimizer).parameters.items()
    if p.default is not p.empty
}
DEFAULTS = {
    "data": "synthetic",
    "steps": 1000,
    "batch_size": 128,
    "grad_accum": 1,
    "lr": 0.1,
    "optimizer": SPEC_OPTIMIZER.get("kind"),
    **{key: SPEC_OPTIMIZER.get(key) for key in SETTINGS},
    "schedule": "linear",
    "warmup": 0,
    "eval_every": 100,
    "checkpoint_every": 100,
    "certify_every": 0,
    "seed": 0,
    "max_skips": 10,
    "loss": "cross_entropy",
    "clip_grad": 0.0,
    "label_column": -1,
    "header": "auto",
    "gns": False,
    "gns_total": False,
    "batch_schedule": "none",
}
KINDS = getattr(sys.modules[make_optimizer.__module__], "KINDS", None)
POLARS = list(getattr(sys.modules[make_optimizer.__module__], "POLAR", {})) or None


def clip_setting(text: str) -> tuple[float | None, float | None]:
    """`--clip none | d | alpha=A` as make_optimizer's (clip, clip_alpha)."""
    try:
        if text == "none":
            return None, None
        if text.startswith("alpha="):
            return None, float(text[len("alpha=") :])
        return float(text), None
    except ValueError:
        message = f"expected none, a number or alpha=A, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None


RULES = rules(KINDS, POLARS)


def bad_arg(args: dict) -> tuple[str, str] | None:
    """The first of `args` that breaks its rule, as (key, "must be ..., got VALUE"), or None."""
    for key, (what, ok) in RULES.items():
        value = args.get(key)
        if not ((value is None and key in ["optimizer", *SETTINGS]) or ok(value)):
            return key, f"must be {what}, got {value!r}"
    return None


def fail(message: str, code: int = 2) -> NoReturn:
    """Stop with `message`. Under torchrun every rank meets the same failures (arguments,
    data, the loss: a mean over the ranks), so rank 0 alone says it, once."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"train.py: error: {message}", file=sys.stderr)
    sys.exit(code)


def diverged(what: str) -> NoReturn:
    fail(
        f"{what}; stopping, with the last checkpoint left as it was. Try a lower --lr.",
        code=1,
    )


# -- model: loss, a training step, evaluation, learning-rate schedule --------------------


def flat(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) as (M, classes) and (M,): extra output dims are positions; one
    label per example applies to all of its positions."""
    if y.dim() == 1 and logits.dim() > 2:
        y = y.view(-1, *[1] * (logits.dim() - 2)).expand(logits.shape[:-1])
    return logits.reshape(-1, logits.shape[-1]), y.reshape(-1)


def loss_of(kind: str, out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The loss `kind` of outputs `out` against labels (integers) or targets (floats): the
    cross-entropy, or the mean squared error against the one-hot label or the targets."""
    if kind == "mse":
        target = y if y.is_floating_point() else F.one_hot(y, out.shape[-1]).float()
        if y.dim() == 1 and out.dim() > 2:  # one label per example, for all its positions
            target = target.view(len(y), *[1] * (out.dim() - 2), -1).expand(out.shape)
        return F.mse_loss(out, target.reshape(out.shape), reduction=reduction)
    return F.cross_entropy(*flat(out, y), reduction=reduction)


def train_step(
    model: nn.Module,
    optimizer: Optimizer,
    scheduler: LambdaLR,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    args: argparse.Namespace,
) -> tuple[torch.Tensor, float, bool]:
    """One update on the micro-batches [(x, y), ...], each moved to `device` when its turn
    comes: the gradient of their mean loss (DDP averages it over the ranks in the last
    backward), clipped as the optimizer steps (--clip-grad: `clip_in_step`). Returns the
    loss, a mean over the micro-batches as a tensor on the device (reading it would wait for
    the step: the log reads many at once), the learning rate it used, and whether the step was
    skipped: its loss or its gradients were not finite, so the weights and the optimizer's
    state stay as they were. A non-finite loss makes every gradient NaN through backward,
    on every rank by DDP's average, so the optimizer's own check (its `skipped` count)
    skips the step with no host sync here; an optimizer without that check is stepped
    after one host sync on the loss. With --bf16 the forward passes run under bfloat16
    autocast (the loss in float32)."""
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=device)
    for i, (x, y) in enumerate(batches):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        last = i == len(batches) - 1
        no_sync = getattr(model, "no_sync", contextlib.nullcontext)  # DDP: reduce once
        with contextlib.nullcontext() if last else no_sync():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                out = model(x)
            loss = loss_of(args.loss, out.float(), y)
            poison = torch.where(loss.isfinite(), 1.0, math.nan)  # 1, or NaN for every grad
            (loss * poison / len(batches)).backward()  # DDP's all-reduce waits for all ranks
        total += loss.detach() / len(batches)
    lr = optimizer.param_groups[0]["lr"]
    checks = hasattr(optimizer, "skipped")
    before = getattr(optimizer, "skipped", 0)
    finite = checks or math.isfinite(mean_over_ranks(total.item(), device))
    if finite:
        optimizer.step()
    scheduler.step()
    return total, lr, not finite or getattr(optimizer, "skipped", 0) > before


def clip_in_step(optimizer: Optimizer, model: nn.Module, max_norm: float) -> None:
    """Clip the gradients' global ℓ2 norm to `max_norm` (--clip-grad) as each step of
    `optimizer` begins: a step pre-hook, which runs after those registered before it, so
    that gns.py's measures the gradient as the backward passes left it (a clipped |G_B|²
    against unclipped per-example norms would bias the noise scale)."""
    params = list(model.parameters())

    def clip(*hook_args: object) -> None:
        torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)

    optimizer.register_step_pre_hook(clip)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    loss_kind: str = "cross_entropy",
    bf16: bool = False,
) -> tuple[float, float | None]:
    """The mean loss on (x, y), per label or per output (mse), and the accuracy (None for
    regression targets), in chunks of 1,024 examples moved to `device`."""
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    terms = labels = 0  # the loss's terms (labels, or outputs for mse); labels
    for i in range(0, len(x), 1024):
        xs, ys = x[i : i + 1024].to(device), y[i : i + 1024].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(xs).float()
        loss += loss_of(loss_kind, out, ys, reduction="sum").double()
        logits, flat_labels = flat(out, ys)
        if not ys.is_floating_point():
            correct += (logits.argmax(1) == flat_labels).sum()
            labels += len(flat_labels)
        terms += out.numel() if loss_kind == "mse" else len(flat_labels)
    model.train()
    return loss.item() / terms, correct.item() / labels if labels else None


def lr_factor(schedule: str, warmup: int, steps: int) -> Callable[[int], float]:
    """Multiplier of --lr at optimizer step s (0-based): linear warm-up over `warmup` steps,
    then constant, or cosine or linear decay that reaches 0 at the end of training."""

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        t = (s - warmup) / max(1, steps - warmup)  # 0 after warm-up, 1 after the last step
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        return 1 - t if schedule == "linear" else 1.0

    return factor


# -- output: atomic files, metrics.csv, the progress line --------------------------------


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write to a temp file in the same directory, fsync it, then rename it over `path`:
    a crash at any moment leaves the old file or the new one, never a torn one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale(out: Path) -> None:
    """Remove the temp files that a killed run left in `out` (FILE.tmp, FILE.XXXX.tmp, of
    each FILE in OUTPUTS; only this run may write those now), and nothing else: a file or
    folder of the user's there that ends in .tmp stays."""
    for name in OUTPUTS:
        for stale in out.glob(f"{name}.*tmp"):
            if stale.is_file():
                stale.unlink()


def write_json(path: Path, obj: dict) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(obj, indent=2).encode() + b"\n"))


def digest(obj: object) -> str:
    """SHA-256 of a checkpoint's contents, in order: each tensor by dtype, shape and bytes,
    containers by their items, anything else by type and repr."""
    h = hashlib.sha256()

    def feed(o: object) -> None:
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous()
            h.update(f"tensor {t.dtype} {tuple(t.shape)}:".encode())
            if t.numel():  # the tensor's bytes in place, without a copy
                h.update((ctypes.c_char * t.nbytes).from_address(t.data_ptr()))
        elif isinstance(o, (dict, list, tuple)):
            h.update(f"{type(o).__name__} {len(o)}:".encode())
            for item in o.items() if isinstance(o, dict) else o:
                feed(item)
        else:
            h.update(f"{type(o).__name__} {o!r};".encode())

    feed(obj)
    return h.hexdigest()


CHECKPOINT = {  # what --resume needs, and its type
    "model": dict,
    "optimizer": dict,
    "scheduler": dict,
    "rng": torch.Tensor,
    "step": int,
    "args": dict,
    "loss": float,
    "seconds": float,
    "skipped": int,
    "in_a_row": int,
}


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: Optimizer,
    scheduler: LambdaLR,
    **info: object,
) -> None:
    """All that --resume needs (CHECKPOINT: the three states, the CPU RNG, step, args, ...)
    and the digest of it all, which --resume checks. A sharded model (--fsdp) and its
    optimizer are saved by every rank (all call this) to the folder that "shards" names."""
    if sharded(model):
        shards = save_shards(path.parent, info["step"], model, optimizer)  # None: not finite
        finite, states = shards is not None, {"model": {}, "optimizer": {}, "shards": shards}
    else:
        finite = all(p.isfinite().all() for p in model.parameters())
        states = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    if not finite:
        diverged(f"the weights are not finite after step {info['step']}")
    if ranks()[0]:
        return
    ckpt = {**states, "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), **info}
    ckpt["sha256"] = digest(ckpt)
    write_atomic(path, lambda f: torch.save(ckpt, f))
    if sharded(model):
        prune_shards(path.parent, keep=shards)


def load_checkpoint(path: Path) -> dict:
    """The checkpoint at `path`, its digest checked; anything else ends the run with one
    line, and the file is left as it is."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (truncated, foreign, a folder: whatever load raises)
        fail(f"{path} cannot be read as a checkpoint ({type(e).__name__}); it is left as it is")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("sha256"), str):
        fail(f"{path} is not a checkpoint of train.py (no checksum); it is left as it is")
    content = {k: v for k, v in ckpt.items() if k != "sha256"}
    if digest(content) != ckpt["sha256"]:
        fail(f"{path} is damaged: its contents do not match its checksum; it is left as it is")
    for key, kind in CHECKPOINT.items():
        if not isinstance(content.get(key), kind) or isinstance(content.get(key), bool):
            fail(f"{path} has no {key} of type {kind.__name__}; it is left as it is")
    return content


def start_reports(path: Path, keep_until: int) -> None:
    """(Re)write certificates.jsonl keeping only the reports up to step `keep_until`."""

    def step_of(line: str) -> int:  # a line torn by a kill counts as after keep_until
        try:
            return json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            return keep_until + 1

    rows = path.read_text().splitlines() if keep_until and path.exists() else []
    rows = [r for r in rows if step_of(r) <= keep_until]
    write_atomic(path, lambda f: f.write("".join(r + "\n" for r in rows).encode()))


def log_report(path: Path, step: int, model: nn.Module, x: torch.Tensor) -> float:
    """Append the certificate's report at `step`, its conditions checked on `x`; returns its
    lipschitz_upper."""
    rep = report(model, x)
    with open(path, "a") as f:
        f.write(json.dumps({"step": step, **rep}) + "\n")
    return rep["lipschitz_upper"]


# -- command line, set-up and the training loop ------------------------------------------


def parse_args() -> argparse.Namespace:
    spec_path = HERE / "spec.json"
    spec = json.loads(spec_path.read_text()) if spec_path.exists() else {}

    class Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass

    p = argparse.ArgumentParser(description=__doc__, formatter_class=Help)
    p.add_argument(
        "--data", help="mnist, shakespeare, synthetic, or PATH to a .csv, .csv.gz, .pt or .txt file"
    )
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--batch-size", type=int, help="examples per step and process")
    p.add_argument(
        "--grad-accum", type=int, help="micro-batches of --batch-size per step and process"
    )
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument(
        "--optimizer",
        choices=getattr(sys.modules[make_optimizer.__module__], "KINDS", None),
        help="optimizer kind",
    )
    p.add_argument(
        "--constraint",
        choices=["none", "cap", "normalize"],
        help="Lipschitz constraint after each step",
    )
    p.add_argument(
        "--momentum",
        type=float,
        help="momentum (β1) of the optimizer; None: 0.9 for the Adam family, else 0.95",
    )
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, help="Nesterov momentum")
    p.add_argument("--polar", choices=POLARS, help="dualized: how polar factors are computed")
    p.add_argument("--weight-decay", type=float, help="decoupled weight decay")
    p.add_argument("--beta1", type=float, help="muon: β1 of the AdamW part")
    p.add_argument("--beta2", type=float, help="β2 of normalized:adam, adamw, muon's AdamW")
    p.add_argument("--eps", type=float, help="ε of normalized:adam, adamw, muon's AdamW")
    p.add_argument("--decay", type=float, help="adafactor kinds: β2_t = 1 − t^(−decay)")
    p.add_argument(
        "--clip",
        type=clip_setting,
        dest="clip_setting",
        help="adafactor: update clipping: none, a constant d, or alpha=A (d_t = t^(c/(2(A-1))))",
    )
    p.add_argument("--eps1", type=float, help="adafactor: added to G² in the second moment")
    p.add_argument("--eps2", type=float, help="adafactor: the step is max(eps2, RMS(W)) × ρ_t")
    p.add_argument("--adamw-lr", type=float, help="muon: learning rate of the AdamW part")
    p.add_argument("--schedule", choices=["constant", "cosine", "linear"], help="lr decay")
    p.add_argument("--warmup", type=int, help="steps of linear lr warm-up")
    p.add_argument(
        "--device",
        default="auto",
        type=device_setting,
        help="auto (cuda if available), cpu, cuda or cuda:N",
    )
    p.add_argument("--seed", type=int, help="seeds the initial weights and the batch order")
    p.add_argument(
        "--max-skips", type=int, help="stop after this many skipped (non-finite) steps in a row"
    )
    p.add_argument(
        "--out",
        default=str(Path("runs", spec.get("folder", HERE.name))),
        help="run directory",
    )
    p.add_argument("--eval-every", type=int, help="steps between evaluations (0: at the end)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (0: at the end)")
    p.add_argument(
        "--certify-every",
        type=int,
        help="steps between logs of lipschitz_upper (0: at the end)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from --out/checkpoint.pt with its options; --steps N with it extends "
        "the run to N steps (the lr schedule is then that of an N-step run from here on)",
    )
    p.add_argument("--loss", choices=["cross_entropy", "mse"], help="the training loss")
    p.add_argument(
        "--clip-grad", type=float, help="clip the gradients' global ℓ2 norm to this (0: off)"
    )
    p.add_argument(
        "--label-column", help="a CSV's label column: an index (negative from the end) or a name"
    )
    p.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        help="whether a CSV's first row is a header (default: auto, a row not all numbers)",
    )
    p.add_argument(
        "--log-every",
        type=int,
        default=10,
        help="steps between writes of metrics.csv (losses stay on the device until then)",
    )
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log to --out/tensorboard (needs the tensorboard package)",
    )
    p.add_argument(
        "--sample", type=int, default=0, help="text models: print this many bytes at the end"
    )
    p.add_argument("--prompt", default="\n", help="--sample: the text to start from")
    p.add_argument("--temperature", type=float, default=1.0, help="--sample: 0 is greedy")
    p.add_argument(
        "--top-k", type=int, default=0, help="--sample: draw from the k likeliest bytes (0: all)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds a process waits for the others (torchrun) before it fails",
    )
    p.add_argument("--bf16", action="store_true", help="forward passes under bfloat16 autocast")
    p.add_argument(
        "--fsdp",
        action="store_true",
        help="torchrun: shard weights, gradients and optimizer state over the processes (FSDP2)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model's forward pass and the dualized optimizer's step",
    )
    p.add_argument("--gns", action="store_true", help="log the norm atoms' noise scale")
    p.add_argument(
        "--gns-total",
        action="store_true",
        help="also exact per-example gradients of all weights (slow; for validation)",
    )
    p.add_argument("--batch-schedule", help="none, linear:START->END, gns or gns:MIN->MAX (tokens)")
    p.set_defaults(**DEFAULTS)
    p.set_defaults(**{k: v for k, v in spec.get("train", {}).items() if k in DEFAULTS})
    p.set_defaults(clip_setting=None)
    args = p.parse_args()
    unset = object()  # which options the command line gives: --resume --steps extends
    given = p.parse_args(namespace=argparse.Namespace(**{a.dest: unset for a in p._actions}))
    args.steps_given = given.steps is not unset
    if isinstance(args.label_column, str) and args.label_column.lstrip("-").isdigit():
        args.label_column = int(args.label_column)
    if args.clip_setting is not None:  # --clip sets both of make_optimizer's clip settings
        args.clip, args.clip_alpha = args.clip_setting
    del args.clip_setting
    if problem := bad_arg(vars(args)):
        fail(f"--{problem[0].replace('_', '-')} {problem[1]}")
    if args.compile and (args.gns or args.gns_total or args.batch_schedule != "none"):
        fail("--gns, --gns-total and --batch-schedule do not work with --compile")
    if not 0 < args.timeout < math.inf:
        fail(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if not args.out:  # Path("") is the working directory, where the run would write
        fail("--out must name a folder, got ''")
    check_extras(args)
    if args.data not in NAMES:  # a path: absolute, for --resume
        path = Path(args.data).expanduser()  # relative to the cwd, else to this directory
        path = HERE / path if not path.exists() and (HERE / path).exists() else path
        args.data = str(path.resolve())
    return args


def device_setting(text: str) -> str:
    """--device: auto, cpu, cuda or cuda:N."""
    kind, _, index = text.partition(":")
    if kind in ("auto", "cpu", "cuda") and (not index or (kind == "cuda" and index.isdigit())):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")


def check_extras(args: argparse.Namespace) -> None:
    """The options that are not the run's settings: logging and sampling."""
    if args.log_every < 1:
        fail(f"--log-every must be an integer ≥ 1, got {args.log_every}")
    if args.sample < 0 or args.top_k < 0 or not 0 <= args.temperature < math.inf:
        fail("--sample, --top-k and --temperature must be ≥ 0 (and finite)")
    text_model = len(INPUT_SHAPE) == 1 and tuple(OUTPUT_SHAPE[:-1]) == tuple(INPUT_SHAPE)
    if args.sample and not text_model:
        fail(f"--sample is for text models; this model maps {INPUT_SHAPE} to {OUTPUT_SHAPE}")
    if args.sample:
        try:
            prompt_tokens(args.prompt, OUTPUT_SHAPE[-1])
        except ValueError as e:
            fail(f"--prompt: {e}")


def resume_from(args: argparse.Namespace) -> tuple[dict | None, list[str]]:
    """With --resume, the checkpoint in --out, checked, and the arguments it changes. Its
    arguments (all but --device, --out, --quiet, --bf16, --compile, --fsdp, --timeout and the
    logging and sampling options) replace the command line's: the run continues as it
    began; `--steps` on the command line extends it. Every rank reads it: --out must be on
    a file system that all of them see."""
    steps = args.steps if vars(args).pop("steps_given") else None
    path = Path(args.out) / "checkpoint.pt"
    if not (args.resume and (path.exists() or path.is_symlink())):
        if args.resume and not ranks()[0]:
            print(
                f"train.py: no checkpoint in {args.out}; starting at step 0",
                file=sys.stderr,
            )
        return None, []
    ckpt = load_checkpoint(path)
    ckpt["args"] = {**DEFAULTS, **ckpt["args"]}  # an older build's: the options it lacked
    if problem := bad_arg(ckpt["args"]):
        fail(f"{path} has a bad args.{problem[0]}: it {problem[1]}; it is left as it is")
    if ckpt.get("ranks", 1) != ranks()[1] and not ranks()[0]:
        print(
            f"train.py: the checkpoint is of {ckpt.get('ranks', 1)} processes, this run has "
            f"{ranks()[1]}: the global batch (--batch-size × processes × --grad-accum) changes",
            file=sys.stderr,
        )
    changed = [k for k in DEFAULTS if vars(args)[k] != ckpt["args"].get(k)]
    vars(args).update({k: ckpt["args"].get(k) for k in DEFAULTS})
    if steps is not None:  # extend the run (or end it sooner, but not before the checkpoint)
        if steps < ckpt["step"]:
            fail(f"--steps {steps}, but the checkpoint in {args.out} is at step {ckpt['step']}")
        args.steps = steps
        changed = [k for k in changed if k != "steps"]
    return ckpt, changed


def get_data(args: argparse.Namespace) -> Dataset:
    """The data set of --data for this model (on the CPU); a clear error if it cannot be."""
    try:
        return load(args.data, INPUT_SHAPE, OUTPUT_SHAPE, args.loss, args.label_column, args.header)
    except DataError as e:
        fail(str(e))


def build(
    args: argparse.Namespace, device: torch.device, ckpt: dict | None
) -> tuple[nn.Module, Optimizer, LambdaLR]:
    """The model (initialised under --seed), its optimizer and the lr schedule, restored
    from `ckpt` when resuming."""
    torch.manual_seed(args.seed)
    model = build_model().to(device)
    if args.fsdp:
        shard(model)
    options = {"kind": args.optimizer, **{k: vars(args)[k] for k in SETTINGS}}
    options["compile"] = args.compile or None
    try:
        optimizer = make_optimizer(
            model, args.lr, **{k: v for k, v in options.items() if v is not None}
        )
    except ValueError as e:
        fail(str(e))
    share_work(optimizer, getattr(sys.modules[make_optimizer.__module__], "POLAR_ATOMS", ()))
    scheduler = LambdaLR(optimizer, lr_factor(args.schedule, args.warmup, args.steps))
    if ckpt is not None:
        if ("shards" in ckpt) != args.fsdp:
            how = "with" if "shards" in ckpt else "without"
            fail(f"{Path(args.out) / 'checkpoint.pt'} is of a run {how} --fsdp; resume it so")
        try:
            if args.fsdp:
                load_shards(Path(args.out) / ckpt["shards"], model, optimizer)
            else:
                model.load_state_dict(ckpt["model"])
                optimizer.load_state_dict(ckpt["optimizer"])
            if "caps" in ckpt and hasattr(optimizer, "constrain"):  # not in older checkpoints
                optimizer.constrain.load_state_dict(ckpt["caps"])
            scheduler.load_state_dict(ckpt["scheduler"])
            torch.set_rng_state(ckpt["rng"])
            if args.steps != ckpt["args"]["steps"]:  # extended: the new schedule from here on
                for group, base, factor in zip(
                    optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
                ):
                    group["lr"] = base * factor(ckpt["step"])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            fail(
                f"{Path(args.out) / 'checkpoint.pt'} is for another network or optimizer "
                f"({first}); it is left as it is"
            )
    return model, optimizer, scheduler


def lock(out: Path) -> IO:
    """Hold out/train.lock while this process lives (the system frees it however the
    process ends): a second run on the same --out stops at once with a clear error."""
    f = open(out / "train.lock", "a+b")  # noqa: SIM115 (kept open: that holds the lock)
    try:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
    except OSError:
        fail(f"{out} is in use by another run of train.py; let it finish, or pass another --out")
    return f


def main() -> None:
    args = parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {args.device}, but CUDA is not available")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        fail(f"--device {args.device}, but there are {torch.cuda.device_count()} GPUs")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if launched() and args.optimizer == "gauss_newton":
        fail(
            "gauss_newton solves for the update on one process's batch, which would differ "
            "between processes: run it as a single process (python train.py)"
        )
    if launched():  # by torchrun: one of several processes
        device = join(device, args.timeout)
    elif args.fsdp:
        fail("--fsdp shards over the processes that torchrun starts: run train.py under torchrun")
    out, held = Path(args.out), contextlib.nullcontext()
    try:
        if ranks()[0] == 0:  # rank 0 alone writes in --out
            out.mkdir(parents=True, exist_ok=True)
            held = lock(out)
    except OSError as e:
        fail(f"--out {out}: {e.strerror or e}")
    try:
        with held:
            train(args, device, out)
        leave(together=True)
    finally:
        leave()
    if launched():
        # Every file is written and closed. Skip the interpreter's teardown: under FSDP2 on
        # gloo it can abort a finished process ("terminate called without an active exception").
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def train(args: argparse.Namespace, device: torch.device, out: Path) -> None:
    """The run in `out`, on every rank; rank 0, which holds the lock of `out`, alone writes."""
    rank, world = ranks()
    writes = rank == 0
    if writes:
        remove_stale(out)
    ckpt, changed = resume_from(args)  # a checkpoint's --batch-size and --grad-accum
    if writes and (world > 1 or args.grad_accum > 1):
        print(
            f"train.py: global batch {args.batch_size * world * args.grad_accum} = "
            f"{args.batch_size} (--batch-size) × {world} processes × {args.grad_accum} "
            "(--grad-accum)",
            file=sys.stderr,
        )
    dataset = get_data(args)
    model, optimizer, scheduler = build(args, device, ckpt)
    if changed and writes:
        print(f"train.py: resuming with the checkpoint's {', '.join(changed)}", file=sys.stderr)
    start, loss, seconds = (ckpt["step"], ckpt["loss"], ckpt["seconds"]) if ckpt else (0, 0.0, 0.0)
    skipped, in_a_row = (ckpt["skipped"], ckpt["in_a_row"]) if ckpt else (0, 0)

    file = start_metrics(out / "metrics.csv", FIELDS, keep_until=start) if writes else None
    metrics = Metrics(file, FIELDS, out / "tensorboard" if args.tensorboard else None)
    if writes:
        start_reports(out / "certificates.jsonl", keep_until=start)
    progress = Progress(start, args.steps, args.quiet or not writes)
    rng_devices = [device] if device.type == "cuda" else []
    t0 = time.time()
    forward = data_parallel(model, device)  # same weights as model
    forward = torch.compile(forward) if args.compile else forward
    model.train()
    lrs = (scheduler.base_lrs, lr_factor(args.schedule, args.warmup, args.steps))
    schedule, per_example = batch_schedule(args.batch_schedule), math.prod(OUTPUT_SHAPE[:-1])
    try:
        noise, plan = setup_gns(args, schedule, model, optimizer, lrs, world, per_example, ckpt)
    except ValueError as e:
        fail(str(e))
    if noise is not None and forward is not model:  # DDP: ranks' gradients against the mean
        noise.watch_ranks(forward)
    if args.clip_grad > 0:  # after the noise's pre-hook: it measures unclipped gradients
        clip_in_step(optimizer, model, args.clip_grad)
    caps = getattr(optimizer, "constrain", None)  # --constraint: its warm starts are state

    def due(step: int, every: int) -> bool:
        """Whether `step`, just taken, is one of every `every` or the last: the run ends when
        its tokens are spent, which under a --batch-schedule is not at --steps."""
        return not plan.left() or (every > 0 and step % every == 0)

    step = start  # counts the updates made so far
    while plan.left():
        step += 1
        try:
            batches = micro_batches(
                dataset, step - 1, args.batch_size, plan.next(noise, optimizer), args.seed
            )
        except ValueError as e:  # every rank alike
            fail(str(e))
        if args.gns_total:
            noise.observe_total(batches, lambda out, y: loss_of(args.loss, out.float(), y))
        step_loss, lr, skip = train_step(forward, optimizer, scheduler, batches, device, args)
        plan.advance()
        skipped, in_a_row = skipped + skip, in_a_row + 1 if skip else 0
        if in_a_row >= args.max_skips:  # every rank alike: the gradients are the ranks' mean
            diverged(
                f"{in_a_row} steps in a row, up to step {step}, had a non-finite loss or "
                f"gradient (loss {mean_over_ranks(step_loss.item(), device):.4g}) and were skipped"
            )
        row = {"step": step, "loss": step_loss, "lr": lr, "skipped": skipped}
        measured = due(step, args.eval_every) or due(step, args.certify_every)
        whole = gathered(model, build_model) if measured else model  # --fsdp: all ranks send
        if writes:
            with torch.random.fork_rng(rng_devices):  # measuring never changes the training run
                if due(step, args.eval_every):
                    x, y = dataset.held_out()
                    row["eval_loss"], row["eval_acc"] = evaluate(
                        whole, x, y, device, args.loss, args.bf16
                    )
                if due(step, args.certify_every):
                    row["lipschitz_upper"] = log_report(
                        out / "certificates.jsonl", step, whole, dataset.held_out()[0].to(device)
                    )
        metrics.add(row)
        if writes and noise is not None:
            log_gns(out / "gns.csv", step, plan, lr, noise)
        if step % args.log_every == 0 or due(step, args.checkpoint_every):
            for r in metrics.flush():  # every rank: the losses are averaged over the ranks
                loss = r["loss"]
                progress.update(r["step"], loss, r["skipped"])
        if (writes or args.fsdp) and due(step, args.checkpoint_every):  # --fsdp: every rank
            save_checkpoint(
                out / "checkpoint.pt",
                model,
                optimizer,
                scheduler,
                step=step,
                args=vars(args),
                loss=loss,
                seconds=seconds + time.time() - t0,
                skipped=skipped,
                in_a_row=in_a_row,
                ranks=world,
                plan=plan.state_dict(),
                gns=noise.state_dict() if noise is not None else {},
                caps=caps.state_dict() if caps is not None else [],
            )
    seconds += time.time() - t0
    metrics.close()
    model = gathered(model, build_model)  # the whole weights, on rank 0
    if not writes:
        return
    counts = {"steps": step, "tokens": plan.tokens}  # a batch schedule's steps vary
    finish(args, model, dataset, device, out, loss, seconds, rng_devices, counts)


def finish(
    args: argparse.Namespace,
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    out: Path,
    loss: float,
    seconds: float,
    rng_devices: list[torch.device],
    counts: dict[str, int],
) -> None:
    """Rank 0, after the last step: the held-out numbers (final.json, with `counts`: the
    steps and tokens trained), the certificate of the trained weights (certificate.json),
    and with --sample, text from the model."""
    x, y = dataset.held_out()
    eval_loss, eval_acc = evaluate(model, x, y, device, args.loss, args.bf16)
    accuracy = "" if eval_acc is None else f", accuracy {eval_acc:.2%}"
    steps = counts["steps"]
    print(f"held-out loss {eval_loss:.4f}{accuracy} ({steps} steps, {seconds:.1f} s) -> {out}")
    write_json(
        out / "final.json",
        {
            **counts,
            "train_loss": loss,
            "eval_loss": eval_loss,
            "eval_acc": eval_acc,
            "seconds": round(seconds, 3),
        },
    )
    model.eval()
    with torch.random.fork_rng(rng_devices):
        write_json(out / "certificate.json", report(model, x.to(device)))
    if args.sample:
        prompt = prompt_tokens(args.prompt, OUTPUT_SHAPE[-1])
        g = torch.Generator().manual_seed(args.seed)
        tokens = generate(
            model, prompt, args.sample, INPUT_SHAPE[0], args.temperature, args.top_k, g
        )
        text = args.prompt + text_of(tokens)
        write_atomic(out / "sample.txt", lambda f: f.write(text.encode()))
        print(text)


if __name__ == "__main__":
    main()
