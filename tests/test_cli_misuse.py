"""Misuses of the command line end in one line and exit status 2: no traceback, no hang, no
file written outside the build folder, and nothing of the user's overwritten.

Most cases call the command's entry point in this process (an exception would escape it and
fail the test); those that could hang, and one of each kind, run `python -m modc`.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest

from modc.cli import main
from modc.fileio import MAX_SPEC_BYTES
from tests.conftest import modc

SPEC = "name: tiny\ninput: [4]\nnetwork:\n  - Linear: 4\n  - ReLU\n"
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def files(folder: Path) -> dict[str, bytes | str]:
    """Everything under `folder`: file contents, and where links point."""
    found: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            found[key] = "-> " + os.readlink(path)
        elif path.is_file():
            found[key] = path.read_bytes()
        elif not path.is_dir():
            found[key] = "special"
    return found


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with a tiny spec, and the working folder for in-process runs."""
    (tmp_path / "tiny.yaml").write_text(SPEC)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(work: Path, *args: str, process: bool = False) -> tuple[int, str, str]:
    """`modc ARGS` in `work`: in this process, or as `python -m modc` (with a timeout)."""
    if process:
        out = modc(*args, cwd=work, timeout=60)
        return out.returncode, out.stdout, out.stderr
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(list(args))
    return code, stdout.getvalue(), stderr.getvalue()


def refused(work: Path, *args: str, says: str, process: bool = False) -> None:
    """`modc ARGS` in `work` exits 2 with one line that says `says`, and writes nothing."""
    before = files(work)
    code, _, err = run(work, *args, process=process)
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modc: error: "), err
    assert says in lines[0], lines[0]
    assert files(work) == before


@pytest.mark.parametrize(
    "out, says",
    [
        ("tiny.yaml", "it is a file, not a folder"),
        ("tiny.yaml/build", "'tiny.yaml' is a file, not a folder"),
        ("a" * 300, "File name too long"),
        ("a/" * 3000, "File name too long"),
        ("/proc/modc-build", "cannot write the build to '/proc/modc-build'"),
        ("/proc/self/modc-build", "cannot write the build to '/proc/self/modc-build'"),
        ("/dev/null", "it is a file, not a folder"),
        ("", "'.' is not empty and holds no modc build"),
    ],
)
def test_compile_out_that_cannot_hold_a_build(work, out, says):
    refused(work, "compile", "tiny.yaml", "-o", out, says=says, process=out == "tiny.yaml")


@pytest.mark.skipif(ROOT, reason="root writes into read-only folders")
def test_compile_out_read_only(work):
    (work / "locked").mkdir(mode=0o555)
    refused(work, "compile", "tiny.yaml", "-o", "locked/build", says="Permission denied")


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="no sysfs here")
def test_compile_out_under_sysfs(work):
    refused(work, "compile", "tiny.yaml", "-o", "/sys/kernel/modc-build", says="cannot write")


def test_a_folder_of_the_users_is_not_overwritten_without_force(work):
    mine = work / "mine"
    mine.mkdir()
    (mine / "model.py").write_text("# my own model\n")
    refused(work, "compile", "tiny.yaml", "-o", "mine", says="holds no modc build; pass --force")
    assert run(work, "compile", "tiny.yaml", "-o", "mine", "--force")[0] == 0
    assert "class Network" in (mine / "model.py").read_text()


def test_a_build_of_the_same_spec_is_rebuilt_and_another_spec_is_refused(work):
    for _ in range(2):
        code, out, err = run(work, "compile", "tiny.yaml")
        assert code == 0, err
        assert "wrote build/tiny/" in out
    (work / "other.yaml").write_text(SPEC.replace("tiny", "other"))
    refused(
        work, "compile", "other.yaml", "-o", "build/tiny", says="the build of another spec, 'tiny'"
    )


def test_links_planted_in_a_builds_data_folder_are_not_followed(work):
    spec = str(Path(__file__).parents[1] / "specs" / "mlp.yaml")  # ships a data set
    assert run(work, "compile", spec, "-o", "b")[0] == 0
    (work / "victim.txt").write_text("mine\n")
    shipped = next((work / "b" / "data").iterdir())
    shipped.unlink()  # rebuilt: the data set is copied again, over planted links
    shipped.with_suffix(".tmp").symlink_to(work / "victim.txt")
    assert run(work, "compile", spec, "-o", "b")[0] == 0
    assert shipped.is_file() and not shipped.is_symlink()
    assert (work / "victim.txt").read_text() == "mine\n"
    (work / "elsewhere").mkdir()
    for path in (work / "b" / "data").iterdir():
        path.unlink()
    (work / "b" / "data").rmdir()
    (work / "b" / "data").symlink_to(work / "elsewhere")
    refused(work, "compile", spec, "-o", "b", says="'b/data' is a link")
    assert not any((work / "elsewhere").iterdir())


def test_a_build_folder_whose_spec_json_is_a_device_is_no_build(work):
    (work / "odd").mkdir()
    (work / "odd" / "spec.json").symlink_to("/dev/zero")
    refused(work, "compile", "tiny.yaml", "-o", "odd", says="holds no modc build", process=True)


def test_spec_that_is_missing_or_not_a_spec_file(work):
    refused(work, "compile", "missing.yaml", says="no such file: missing.yaml")
    (work / "folder.yaml").mkdir()
    refused(work, "check", "folder.yaml", says="cannot read 'folder.yaml': a folder, not a file")
    refused(work, "check", "tiny.txt", says="a spec file ends in .yaml, .yml, .modc")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_spec_that_is_a_fifo_or_a_device_does_not_hang(work):
    os.mkfifo(work / "fifo.yaml")
    refused(work, "check", "fifo.yaml", says="not a regular file", process=True)
    (work / "zero.modc").symlink_to("/dev/zero")
    refused(work, "compile", "zero.modc", says="not a regular file", process=True)


def test_spec_too_large_or_not_text(work):
    (work / "big.modc").write_text("# " + "x" * MAX_SPEC_BYTES + "\n")
    refused(work, "check", "big.modc", says=f"larger than {MAX_SPEC_BYTES:,} bytes")
    (work / "latin.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    refused(work, "check", "latin.yaml", says="not UTF-8 text")


@pytest.mark.skipif(ROOT, reason="root reads unreadable files")
def test_spec_unreadable(work):
    (work / "tiny.yaml").chmod(0)
    refused(work, "check", "tiny.yaml", says="Permission denied")


def test_convert_and_graph_never_replace_a_file_without_force(work):
    refused(
        work, "convert", "tiny.yaml", "--to", "yaml", "-o", "tiny.yaml", says="exists; pass --force"
    )
    (work / "notes.txt").write_text("mine\n")
    refused(work, "graph", "tiny.yaml", "-o", "notes.txt", says="exists; pass --force")
    assert run(work, "convert", "tiny.yaml", "--to", "modc", "-o", "notes.txt", "--force")[0] == 0
    assert 'name "tiny"' in (work / "notes.txt").read_text()


def test_convert_and_graph_out_that_is_no_file(work):
    (work / "folder").mkdir()
    refused(work, "graph", "tiny.yaml", "-o", "folder", says="is a folder; -o takes a file name")
    refused(work, "convert", "tiny.yaml", "--to", "modc", "-o", "tiny.yaml/x", says="is a file")
    refused(work, "graph", "tiny.yaml", "-o", "/dev/null", "--force", says="is not a regular file")
    refused(work, "convert", "tiny.yaml", "--to", "yaml", "-o", "/proc/self/x.yaml", says="cannot")


def test_a_name_the_terminal_cannot_show_is_escaped_on_one_line(work):
    refused(work, "check", "a\nb\x1b[31m.yaml", says="no such file: a\\nb\\x1b[31m.yaml")


def test_a_build_folder_with_a_folder_where_a_file_goes(work):
    assert run(work, "compile", "tiny.yaml", "-o", "out")[0] == 0
    (work / "out" / "model.py").unlink()
    (work / "out" / "model.py").mkdir()
    refused(
        work, "compile", "tiny.yaml", "-o", "out", says="'out/model.py' is a folder, not a file"
    )


def test_dash_prints(work):
    code, out, _ = run(work, "convert", "tiny.yaml", "--to", "modc", "-o", "-")
    assert code == 0 and 'name "tiny"' in out
    assert not (work / "-").exists()
