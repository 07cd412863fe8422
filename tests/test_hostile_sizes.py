"""Hostile sizes and text end in a clean, located error (or the right answer) within seconds
and under 2 GB; the miscompiles of tuples and single copies compute what the spec means.

The CLI cases run in one child process, each under its own alarm, so that a hang or a
memory bomb fails the test instead of the test run; the child reports its peak memory.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import modc
from tests.conftest import ROOT
from tests.conftest import modc as modc_cli

SECONDS = 30  # each case
MEMORY = 2 * 2**30  # bytes, the child's peak resident size


def _nested_defs(levels: int) -> str:
    lines = ["input 4", "def f0(i) = Linear(4)"]
    lines += [f"def f{k}(i) = f{k - 1}(i - 1) > f{k - 1}(i - 1)" for k in range(1, levels + 1)]
    return "\n".join([*lines, f"network = f{levels}({levels})", ""])


def _nested_repeats(levels: int) -> str:
    lines = ["input 2", "def r0 = Linear(2)"]
    lines += [f"def r{k} = repeat(2) {{ r{k - 1} }}" for k in range(1, levels + 1)]
    return "\n".join([*lines, f"network = r{levels}", ""])


# name: (file name, text, extra argv, exit status, line:col of the error or None, words)
CASES = {
    "nested_definitions": (
        "net.modc",
        _nested_defs(40),
        [],
        2,
        "2:13",
        "at least 100,001 operations",
    ),
    "repeat_1e9": (
        "net.modc",
        "input 4\nnetwork = ReLU ** (10^9)\n",
        [],
        2,
        "2:16",
        "at least 1,000,000,000 operations",
    ),
    "nested_repeats": ("net.modc", _nested_repeats(99), [], 2, None, "operations"),
    "linear_1e5": (
        "net.modc",
        "input 1\nnetwork = Linear(1) ** 100000\n",
        [],
        0,
        None,
        "parameters 100,000",
    ),
    "power_tower": (
        "net.modc",
        "input 4\nparam n = ((2^4096)^4096)^4096\nnetwork = Linear(4)\n",
        [],
        2,
        "2:20",
        "is too large",
    ),
    "power_tower_override": (
        "net.modc",
        "input 4\nparam n = 1\nnetwork = Linear(4)\n",
        ["-p", "n=((2^4096)^4096)^4096"],
        2,
        "<command line>:1:12",
        "is too large",
    ),
    "min_of_20000": (
        "net.modc",
        "input 4\nnetwork = Linear(min(" + ", ".join(["4"] * 20_000) + "))\n",
        [],
        2,
        "2:18",
        "min() takes at most 64 arguments, got 20,000",
    ),
    "sqrt_of_a_long_number": (
        "net.modc",
        "input 4\nnetwork = Linear(floor(sqrt(10^4000 + 1)))\n",
        [],
        2,
        "2:24",
        "sqrt() takes numbers of at most 2,048 bits",
    ),
    "size_1e4096": ("net.modc", "input 4\nnetwork = Linear(1e4096)\n", [], 2, "2:18", "2^62"),
    "softmax_1e400": (
        "net.yaml",
        "input: 4\nnetwork:\n  - Softmax: 10^400\n",
        [],
        2,
        "3:14",
        "magnitude between 2^-53 and 2^53, got 1.00e+400",
    ),
    "size_of_4396_digits": (
        "net.modc",
        "input 4\nnetwork = Linear(1e4096 * 1e300)\n",
        [],
        2,
        "2:18",
        "must be at most 2^62, got 1.00e+4396",
    ),
    "size_of_4396_digits_yaml": (
        "net.yaml",
        "input: 4\nnetwork:\n  - Linear: 1e4096 * 1e300\n",
        [],
        2,
        "3:13",
        "must be at most 2^62, got 1.00e+4396",
    ),
    "output_of_4396_digits": (
        "net.modc",
        "input 4\nnetwork = Linear(4)\noutput 1e4096 * 1e300\n",
        [],
        2,
        "3:8",
        "declares (1.00e+4396,)",
    ),
    "literal_of_100000_digits": (
        "net.modc",
        "input 4\nnetwork = Linear(" + "9" * 100_000 + ")\n",
        [],
        2,
        "2:18",
        "is too large: a number is written in at most 4,300 characters",
    ),
    "irrational_tower": (
        "net.modc",
        "param n = floor(((1 + sqrt(2))^4096)^4096)\ninput 4\nnetwork = Linear(4)\n",
        [],
        2,
        "1:37",
        "is too large: about 2^21,333,125, and numbers are at most 2^16,384",
    ),
    "floor_of_a_long_irrational": (
        "net.modc",
        "input 4\nnetwork = Linear(4) > floor((1 + sqrt(2))^4096) * ReLU\n",
        [],
        2,
        "2:23",
        "numbers that are not exact are rounded only up to 2^1,024",
    ),
    "floor_too_close_to_call": (
        "net.modc",
        "input 4\nnetwork = Linear(4 - floor((1 + sqrt(2))^200))\n",
        [],
        2,
        "2:22",
        "cannot be computed exactly: its numbers are too close to tell apart",
    ),
    "max_then_round_a_long_irrational": (
        "net.modc",
        "input 4\nnetwork = Linear(max(sqrt(2)^4095, sqrt(5)^4095) // 10^1000 + 1)\n",
        [],
        2,
        "2:50",
        "rounded only up to 2^1,024",
    ),
    "setting_of_400_digits": (
        "net.modc",
        "input 4\nnetwork = Linear(4)\ntrain { lr = " + "9" * 400 + " }\n",
        [],
        2,
        "3:14",
        "is too large: a setting is at most 1.8e+308",
    ),
    "train_setting_of_400_digits_yaml": (
        "net.yaml",
        "input: 4\nnetwork: [Linear: 4]\ntrain: {lr: " + "9" * 400 + "}\n",
        [],
        2,
        "3:13",
        "is too large: a setting is at most 1.8e+308",
    ),
    "optimizer_setting_of_5000_digits_yaml": (
        "net.yaml",
        "input: 4\nnetwork: [Linear: 4]\noptimizer: {momentum: " + "9" * 5000 + "}\n",
        [],
        2,
        "3:23",
        "is too large: a setting is at most 1.8e+308",
    ),
    "lone_surrogate": (
        "net.yaml",
        'name: "a\\udcff"\ninput: 4\nnetwork: [ReLU]\n',
        [],
        2,
        "1:7",
        "lone surrogate",
    ),
    "five_megabytes": (
        "net.modc",
        "input 4\n" + "# padding\n" * 500_000 + "network = ReLU\n",
        [],
        2,
        None,
        "larger than 262,144 bytes",
    ),
    "byte_order_mark": (
        "net.modc",
        "\ufeffinput 4\nnetwork = Linear(4) > Foo\n",
        [],
        2,
        "2:23",
        "unknown operation 'Foo'",
    ),
    "line_separator_in_yaml_comment": (
        "net.yaml",
        "input: 4  # one\u2028two\nnetwork:\n  - Foo\n",
        [],
        2,
        "3:5",
        "unknown operation 'Foo'",
    ),
    "tuple_output": (
        "net.modc",
        "input 3\nnetwork = (Linear(3), Linear(5))\n",
        [],
        2,
        "2:11",
        "output must be one tensor",
    ),
}


def _drive() -> None:
    """In the child: run each case of stdin's JSON list [name, argv] under an alarm."""
    import contextlib
    import io
    import signal
    import time

    from modc.cli import main

    def alarm(*_: object) -> None:
        raise TimeoutError(f"over {SECONDS} s")

    signal.signal(signal.SIGALRM, alarm)
    out = {}
    for name, argv in json.load(sys.stdin):
        err = io.StringIO()
        start = time.monotonic()
        signal.alarm(SECONDS)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                rc = main(argv)
        except BaseException as e:  # a traceback: the test reports it
            rc = f"{type(e).__name__}: {e}"
        finally:
            signal.alarm(0)
        out[name] = {"rc": rc, "stderr": err.getvalue(), "seconds": time.monotonic() - start}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"cases": out, "peak": peak}))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    jobs = []
    for name, (file, text, argv, *_) in CASES.items():
        folder = tmp_path_factory.mktemp(name)
        (folder / file).write_text(text, encoding="utf-8")
        jobs.append([name, ["check", str(folder / file), *argv]])
    zero = tmp_path_factory.mktemp("zero") / "zero.modc"
    zero.symlink_to("/dev/zero")
    jobs.append(["dev_zero", ["check", str(zero)]])
    child = subprocess.run(
        [sys.executable, "-c", "from tests.test_hostile_sizes import _drive; _drive()"],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=SECONDS * (len(jobs) + 1),
    )
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout.splitlines()[-1])


@pytest.mark.parametrize("name", CASES)
def test_hostile_case_is_clean_and_located(results: dict, name: str):
    file, _, _, status, where, words = CASES[name]
    got = results["cases"][name]
    assert got["rc"] == status, got
    assert got["seconds"] < SECONDS
    text = got["stderr"]
    assert "Traceback" not in text
    if status == 2:
        assert words in text, text
        first = text.splitlines()[0]
        assert ": error: " in first
        if where is not None:
            at = where if where.startswith("<") else f"{file}:{where}"
            assert f"{at}: error:" in first, first
            assert "^" in text.splitlines()[2]
        elif ":" in first.split(": error:")[0]:
            assert "^" in text  # located: the line and a caret
    assert results["peak"] < MEMORY


def test_a_spec_that_never_ends_is_refused(results: dict):
    got = results["cases"]["dev_zero"]
    assert got["rc"] == 2 and "not a regular file" in got["stderr"]


# ------------------------------------------------------------ the forward means the spec


def _build(tmp_path: Path, text: str, name: str = "net.modc") -> torch.nn.Module:
    spec = tmp_path / name
    spec.write_text(text)
    torch.manual_seed(0)
    return modc.build(spec, out=tmp_path / "build").model.build_model().double()


def test_scaled_tuple_scales_every_branch(tmp_path: Path):
    model = _build(tmp_path, "input 3\nnetwork = 2 * (Linear(3), Linear(3)) > Add\n")
    w = model.state_dict()
    x = torch.randn(5, 3, dtype=torch.float64)
    want = 2 * (x @ w["linear1.weight"].T) + 2 * (x @ w["linear2.weight"].T)
    torch.testing.assert_close(model(x), want)


def test_scaled_tuple_inside_a_composition(tmp_path: Path):
    text = "input 3\nnetwork = 0.5 * (Linear(4) > (ReLU, Linear(4))) > Add\n"
    model = _build(tmp_path, text)
    w = model.state_dict()
    x = torch.randn(5, 3, dtype=torch.float64)
    h = x @ w["linear1.weight"].T
    torch.testing.assert_close(model(x), 0.5 * h.relu() + 0.5 * (h @ w["linear2.weight"].T))


def test_single_copy_may_change_the_shape(tmp_path: Path):
    text = "input: 3\nnetwork:\n  - repeat: 1\n    body: [Linear: 5, ReLU]\n"
    model = _build(tmp_path, text, "net.yaml")
    (weight,) = model.state_dict().values()
    assert weight.shape == (5, 3)
    x = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(model(x), (x @ weight.T).relu())


def test_tuple_output_is_refused_by_compile_too(tmp_path: Path):
    spec = tmp_path / "net.modc"
    spec.write_text("input 3\nnetwork = (Linear(3), Linear(5))\n")
    with pytest.raises(modc.errors.ModcError, match="one tensor"):
        modc.compile_spec(spec, tmp_path / "build")


def test_build_refuses_a_spec_that_never_ends(tmp_path: Path):
    zero = tmp_path / "zero.modc"
    zero.symlink_to("/dev/zero")
    with pytest.raises(modc.errors.ModcError, match="not a regular file"):
        modc.build(zero, out=tmp_path / "build")


def test_a_free_size_holding_a_number_python_cannot_print_is_reported(tmp_path: Path):
    spec = tmp_path / "net.modc"
    spec.write_text("param width = 3\ninput 4\nnetwork = Linear(width + 1e4000*1e301) > ReLU\n")
    for form in ("text", "latex", "json"):
        out = modc_cli("bounds", str(spec), "--free", "width", "--format", form)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        assert "4301" in out.stdout  # the size, by its exponent
