"""Every error class of the spec language: `file:line:col: error: ...`, the line, a caret,
exit status 2 and no traceback, for DSL and YAML specs alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from modc.cli import main
from tests.conftest import modc

# name: ({file: text}, extra CLI args, file with the error, line, col, message, hint)
CASES = {
    "unexpected_token": (
        {"net.modc": "param width = 3\ninput 4\nnetwork = Linear(4) > > ReLU\n"},
        [],
        "net.modc",
        3,
        23,
        "unexpected '>'; expected a network or a number",
        None,
    ),
    "unexpected_end": (
        {"net.modc": "input 4\nnetwork = Linear(4\n"},
        [],
        "net.modc",
        2,
        19,
        "unexpected end of file; expected ')' or ','",
        None,
    ),
    "misspelled_statement": (
        {"net.modc": "input 4\nparm width = 3\nnetwork = ReLU\n"},
        [],
        "net.modc",
        2,
        1,
        "unexpected name 'parm'; expected an operator or the next statement",
        "did you mean 'param'?",
    ),
    "juxtaposed_names": (
        {"net.modc": "input 4\nnetwork = Linear(4) ReLU\n"},
        [],
        "net.modc",
        2,
        21,
        "unexpected name 'ReLU'; expected an operator or the next statement",
        "use '*' to multiply and '>' to compose",
    ),
    "undefined_operation": (
        {"net.modc": "input 4\nnetwork = Flatten > Lineer(10)\n"},
        [],
        "net.modc",
        2,
        21,
        "unknown operation 'Lineer'",
        "did you mean 'Linear'?",
    ),
    "undefined_definition": (
        {"net.modc": "input 4\ndef block(d) = Linear(d)\nnetwork = blok(4)\n"},
        [],
        "net.modc",
        3,
        11,
        "unknown operation 'blok'",
        "did you mean 'block'?",
    ),
    "undefined_name": (
        {"net.modc": "param width = 8\ninput 4\nnetwork = Linear(2 * widht)\n"},
        [],
        "net.modc",
        3,
        22,
        "unknown name 'widht'",
        "did you mean 'width'?",
    ),
    "definition_arity": (
        {"net.modc": "input 4\ndef f(x) = Linear(x)\nnetwork = f(1, 2)\n"},
        [],
        "net.modc",
        3,
        11,
        "'f' takes 1 argument, got 2",
        None,
    ),
    "operation_arity": (
        {"net.modc": "input 4\nnetwork = Linear(4, 5)\n"},
        [],
        "net.modc",
        2,
        21,
        "Linear takes 1 argument, got 2",
        None,
    ),
    "argument_type": (
        {"net.modc": "input 4\nnetwork = Linear(ReLU())\n"},
        [],
        "net.modc",
        2,
        18,
        "Linear takes numbers, not a sub-network",
        None,
    ),
    "number_as_network": (
        {"net.modc": "input 4\ndef f(x) = x > ReLU\nnetwork = f(3)\n"},
        [],
        "net.modc",
        2,
        12,
        "'x' is a number here, not a network",
        None,
    ),
    "unknown_keyword_argument": (
        {"net.modc": "input 4\nnetwork = Linear(outt=4)\n"},
        [],
        "net.modc",
        2,
        23,
        "Linear has no argument 'outt'",
        "did you mean 'out'?",
    ),
    "tuple_into_single_input": (
        {"net.modc": "input (4, 4)\nnetwork = (ReLU, ReLU) > RoPE\n"},
        [],
        "net.modc",
        2,
        26,
        "RoPE takes one input, but gets a tuple of 2",
        None,
    ),
    "recursive_definition": (
        {"net.modc": "input 4\ndef f = ReLU > g\ndef g = f\nnetwork = f\n"},
        [],
        "net.modc",
        3,
        9,
        "recursive definition: f → g → f",
        None,
    ),
    "include_cycle": (
        {
            "net.modc": 'include "a.modc"\ninput 4\nnetwork = ReLU\n',
            "a.modc": 'include "b.yaml"\n',
            "b.yaml": "include: [a.modc]\n",
        },
        [],
        "b.yaml",
        1,
        11,
        "include cycle: a.modc → b.yaml → a.modc",
        None,
    ),
    "missing_include": (
        {"net.modc": 'input 4\ninclude "lib/nope.modc"\nnetwork = ReLU\n'},
        [],
        "net.modc",
        2,
        9,
        "cannot include 'lib/nope.modc': no such file",
        "relative to the including file",
    ),
    "missing_std_include": (
        {"net.modc": 'input 4\ninclude "std/mpl.modc"\nnetwork = ReLU\n'},
        [],
        "net.modc",
        2,
        9,
        "cannot include 'std/mpl.modc': no such file",
        "std/mlp.modc",
    ),
    "repeat_count_zero": (
        {"net.modc": "param depth = 1\ninput 4\nnetwork = ReLU ** (depth - 1)\n"},
        [],
        "net.modc",
        3,
        20,
        "a repeat count must be a positive integer, got 0",
        None,
    ),
    "fractional_size": (
        {"net.modc": "input 4\nnetwork = Linear(5/2)\n"},
        [],
        "net.modc",
        2,
        18,
        "the size given to Linear must be a positive integer, got 5/2",
        None,
    ),
    "input_size_zero": (
        {"net.yaml": "input: [1, 0]\nnetwork: [Flatten]\n"},
        [],
        "net.yaml",
        1,
        12,
        "an input size must be a positive integer, got 0",
        None,
    ),
    "too_large_for_memory": (
        {"net.modc": "param width = 8\ninput 4\nnetwork = Linear(width) > Linear(width)\n"},
        ["-p", "width=10^7"],
        "net.modc",
        3,
        27,
        "this network would need 100,000,040,000,000 parameters",
        "the largest part is Linear(10000000)",
    ),
    "unknown_override": (
        {"net.modc": "param width = 8\ninput 4\nnetwork = Linear(width)\n"},
        ["-p", "widht=3"],
        "<command line>",
        1,
        1,
        "the spec has no parameter 'widht'",
        "did you mean 'width'?",
    ),
    "yaml_unknown_operation": (
        {"net.yaml": "input: 4\nnetwork:\n  - Lineer: 10\n"},
        [],
        "net.yaml",
        3,
        5,
        "unknown operation 'Lineer'",
        "did you mean 'Linear'?",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_error_class(case, tmp_path: Path, capsys):
    files, extra, where, line, col, message, hint = CASES[case]
    for fname, text in files.items():
        (tmp_path / fname).write_text(text)
    spec = tmp_path / next(iter(files))
    assert main(["check", str(spec), *extra]) == 2
    err = capsys.readouterr().err
    first, shown, caret, *rest = err.splitlines()
    path = where if where.startswith("<") else str(tmp_path / where)
    assert first.startswith(f"{path}:{line}:{col}: error: "), err
    assert message in first, err
    if not where.startswith("<"):
        assert shown == "  " + files[where].splitlines()[line - 1]
    assert caret.index("^") == col + 1
    if hint:
        assert hint in "\n".join(rest), err


def test_a_spec_error_from_the_command_line_has_no_traceback(tmp_path: Path):
    spec = tmp_path / "net.modc"
    spec.write_text("input 4\nnetwork = Linear(4) > > ReLU\n")
    out = modc("check", str(spec))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith(f"{spec}:2:23: error: unexpected '>'")


def test_an_include_of_a_symlink_loop_is_a_positioned_error(tmp_path: Path, capsys):
    """Resolving a self-referencing symlink raised RuntimeError (Python < 3.13)."""
    (tmp_path / "loop.modc").symlink_to("loop.modc")
    spec = tmp_path / "net.modc"
    spec.write_text('include "loop.modc"\ninput 4\nnetwork = ReLU\n')
    assert main(["check", str(spec)]) == 2
    first, shown, caret = capsys.readouterr().err.splitlines()
    assert first.startswith(f"{spec}:1:9: error: cannot read '{tmp_path / 'loop.modc'}': ")
    assert (shown, caret) == ('  include "loop.modc"', "          ^~~~~~~~~~~")
