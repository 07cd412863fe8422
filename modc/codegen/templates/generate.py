"""Text from a trained byte-level model: `generate()`, and a command that samples from a run.

    python generate.py runs/gpt --bytes 500 --prompt "ROMEO:" --temperature 0.8 --top-k 40

The model maps (context,) byte tokens to (context, vocab) next-byte logits. Each new byte
is drawn from the logits at the last position of the latest `context` bytes, divided by
the temperature, restricted to the `top_k` likeliest bytes (0: all). While the text is
shorter than the context it is padded after its end, which a causal model never looks
at. Imports torch and the Python standard library only.
"""

import argparse
import sys
from pathlib import Path

import torch
from torch import nn


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt: torch.Tensor,
    n: int,
    context: int,
    temperature: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`n` tokens drawn after the 1-D token tensor `prompt` (at least one token), on the
    model's device; temperature 0 takes the likeliest token."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tokens = prompt.to(device=device, dtype=torch.long).flatten()
    window = torch.zeros(1, context, dtype=torch.long, device=device)
    for _ in range(n):
        recent = tokens[-context:]
        window.zero_()
        window[0, : len(recent)] = recent
        logits = model(window)[0, len(recent) - 1].float()
        if temperature == 0:
            token = logits.argmax().reshape(1)
        else:
            logits = logits / temperature
            if 0 < top_k < len(logits):
                kth = logits.topk(top_k).values[-1]
                logits = logits.masked_fill(logits < kth, -float("inf"))
            probs = torch.softmax(logits, dim=-1)
            token = torch.multinomial(probs.cpu(), 1, generator=generator).to(device)
        tokens = torch.cat([tokens, token])
    model.train(was_training)
    return tokens[len(prompt) :]


def text_of(tokens: torch.Tensor) -> str:
    """Bytes as text: UTF-8, with a byte that is not valid shown as an escape."""
    return bytes(tokens.tolist()).decode("utf-8", errors="backslashreplace")


def prompt_tokens(prompt: str, vocab: int) -> torch.Tensor:
    """The prompt's UTF-8 bytes (a newline if empty), each checked against the vocab."""
    raw = prompt.encode() or b"\n"
    if max(raw) >= vocab:
        raise ValueError(f"the prompt has byte {max(raw)}; the model's vocab is {vocab}")
    return torch.tensor(list(raw), dtype=torch.long)


def main() -> None:
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    from model import INPUT_SHAPE, OUTPUT_SHAPE, build_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run", help="a run folder of train.py (its checkpoint.pt)")
    p.add_argument("--bytes", type=int, default=500, help="bytes to generate")
    p.add_argument("--prompt", default="\n", help="text to start from")
    p.add_argument("--temperature", type=float, default=1.0, help="0: the likeliest byte")
    p.add_argument("--top-k", type=int, default=0, help="draw from the k likeliest (0: all)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if len(INPUT_SHAPE) != 1 or tuple(OUTPUT_SHAPE[:-1]) != tuple(INPUT_SHAPE):
        p.error(f"this model maps {INPUT_SHAPE} to {OUTPUT_SHAPE}: not a byte-level text model")
    if args.bytes < 0 or args.temperature < 0 or args.top_k < 0:
        p.error("--bytes, --temperature and --top-k must be ≥ 0")
    try:
        ckpt = torch.load(Path(args.run) / "checkpoint.pt", map_location="cpu", weights_only=True)
        model = build_model()
        model.load_state_dict(ckpt["model"])
        prompt = prompt_tokens(args.prompt, OUTPUT_SHAPE[-1])
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        p.error(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    g = torch.Generator().manual_seed(args.seed)
    out = generate(model, prompt, args.bytes, INPUT_SHAPE[0], args.temperature, args.top_k, g)
    print(args.prompt + text_of(out))


if __name__ == "__main__":
    main()
