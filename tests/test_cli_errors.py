"""Bad specs get `file:line:col: error: ...`, the line, a caret, and exit status 2."""

from __future__ import annotations

import pytest

from tests.conftest import modc

CASES = {
    "yaml_syntax": (
        "input: [1, 28, 28\nnetwork:\n  - Linear: 10\n",
        2,
        8,
        "invalid YAML",
        None,
    ),
    "unknown_operation": (
        "input: 784\nnetwork:\n  - Flatten\n  - Lineer: 10\n",
        4,
        5,
        "unknown operation 'Lineer'",
        "did you mean 'Linear'?",
    ),
    "unknown_name": (
        "params:\n  width: 64\ninput: 784\nnetwork:\n  - Linear: 2 * widht\n",
        5,
        17,
        "unknown name 'widht'",
        "did you mean 'width'?",
    ),
    "shape_mismatch_residual": (
        "params:\n  width: 64\ninput: 784\nnetwork:\n  - Linear: width\n"
        "  - residual: 2\n    body:\n      - Linear: 32\n",
        8,
        9,
        "shape mismatch",
        None,
    ),
    "shape_mismatch_sum": (
        "input: 8\nnetwork:\n  - sum:\n    - Linear: 8\n    - Linear: 4\n",
        3,
        5,
        "shape mismatch: branches of a sum must have the same shape",
        None,
    ),
    "zero_scale": (
        "input: 4\nnetwork:\n  - Linear: 4\n  - scale: 0\n    body:\n      - Linear: 4\n",
        4,
        12,
        "a scale of 0 makes the term's output 0 whatever its input",
        "remove the term",
    ),
    "negative_mass": (
        "input: 4\nnetwork:\n  - Linear: {out: 4, mass: -1}\n",
        3,
        28,
        "a mass must be 0 or more",
        None,
    ),
    "declared_output": (
        "input: 8\noutput: [10]\nnetwork:\n  - Linear: 8\n",
        2,
        10,
        "the network's output has shape (8,)",
        None,
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_error_points_at_the_offending_text(case, write_spec):
    text, line, col, message, hint = CASES[case]
    path = write_spec(text)
    out = modc("compile", str(path), "-o", str(path.parent / "build"))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    first, shown, caret, *rest = out.stderr.splitlines()
    assert first.startswith(f"{path}:{line}:{col}: error: ")
    assert message in first
    assert shown == "  " + text.splitlines()[line - 1]
    assert caret.index("^") == col + 1
    if hint:
        assert hint in "\n".join(rest)
    assert not (path.parent / "build").exists()


def test_unknown_parameter_override_suggests_the_right_one():
    out = modc("bounds", "specs/mlp.yaml", "-p", "widht=3")
    assert out.returncode == 2
    assert out.stderr.startswith("<command line>:1:1: error: the spec has no parameter 'widht'")
    assert "did you mean 'width'?" in out.stderr


def test_non_positive_repeat_count_is_refused():
    out = modc("bounds", "specs/mlp.yaml", "-p", "depth=1")
    assert out.returncode == 2
    assert (
        "specs/mlp.yaml:10:13: error: a repeat count must be a positive integer, got 0"
        in out.stderr
    )


def test_missing_file_is_a_clean_error():
    out = modc("compile", "specs/nope.yaml")
    assert out.returncode == 2
    assert out.stderr.strip() == "modc: error: no such file: specs/nope.yaml"


@pytest.mark.parametrize(
    "text, col",
    [
        ("network = Linear(4) > (width^4096 + 1)^4096 * ReLU", 29),
        ("network = residual(depth^4096) { Linear(4) }", 25),
        ("network = tare(width + 1) { Linear(4) > Linear(4, mass=(depth+1)^4096) }", 65),
        ("network = Linear(4) > (width % 7)^4096 * ReLU", 34),
    ],
)
def test_a_huge_degree_in_free_parameters_is_refused(text, col, write_spec):
    path = write_spec(f"param width = 4\nparam depth = 2\ninput 4\n{text}\n", "net.modc")
    out = modc("bounds", str(path), "--free", "width,depth", timeout=60)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    first, _, caret = out.stderr.splitlines()[:3]
    assert first == (
        f"{path}:4:{col}: error: '^' of these operands has degree 4096 in the parameters, "
        "more than 64"
    )
    assert caret.index("^") == col + 1
