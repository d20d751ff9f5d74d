"""README.md's code blocks work as written: python blocks run, bash lines parse, make targets exist."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from plantseek.cli import build_parser
from plantseek.pruners import base as pruner_base
from plantseek.sweep.config import parse_sweep

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def blocks(language: str) -> list[str]:
    """The bodies of README.md's ```<language> fenced blocks, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), flags=re.M | re.S)


def file_blocks() -> dict[str, str]:
    """The python blocks that are files (their first line is ``# <name>.py``): name -> text."""
    out = {}
    for block in blocks("python"):
        first = block.splitlines()[0] if block.strip() else ""
        m = re.fullmatch(r"# (\w+\.py)", first.strip())
        if m:
            out[m.group(1)] = block
    return out


def bash_commands() -> list[list[str]]:
    """Each command of the bash blocks as argv, with `\\` continuations joined and comments dropped."""
    commands = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                commands.append(argv)
    return commands


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w.-]*):(?!=)", text, flags=re.M))


def test_readme_has_the_blocks_this_test_checks():
    assert len(blocks("python")) >= 3 and len(blocks("bash")) >= 4 and len(blocks("toml")) >= 1


def test_python_blocks_run_in_order(tmp_path, monkeypatch):
    """Run as a reader pasting them would: in order, in one namespace, in an empty working directory; a block
    that is a file (``# mymodule.py``) is saved there instead, and the snippets import it."""
    monkeypatch.chdir(tmp_path)
    files = file_blocks()
    assert "mymodule.py" in files
    with monkeypatch.context() as m:
        # the README registers "my-magnitude": give it a copy of the registry so that nothing leaks into other
        # tests (tests/pruners/test_pruners_user.py registers its own "my-magnitude" when it is imported)
        registry = {k: v for k, v in pruner_base._REGISTRY.items() if k != "my-magnitude"}
        m.setattr(pruner_base, "_REGISTRY", registry)
        m.syspath_prepend(str(tmp_path))  # a script's (or an interactive session's) own directory
        for name, text in files.items():
            (tmp_path / name).write_text(text)
        namespace: dict = {"__name__": "__readme__"}
        try:
            for i, code in enumerate(blocks("python")):
                if code not in files.values():
                    exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)  # noqa: S102
            assert registry["my-magnitude"].__module__ == "mymodule"
        finally:
            for name in files:
                sys.modules.pop(name[:-3], None)
    assert (tmp_path / "net.pt").exists()
    leaked = pruner_base._REGISTRY.get("my-magnitude")
    assert leaked is None or leaked.__module__ != "mymodule"


def test_the_plugin_example_runs_on_the_command_line_as_written(tmp_path):
    """The README's `plantseek --import mymodule ...` lines, run by the console script in the directory that
    holds the README's mymodule.py (the console script's own path has neither)."""
    script = Path(sys.executable).with_name("plantseek")
    if not script.exists():
        pytest.skip("no plantseek console script beside this Python")
    for name, text in file_blocks().items():
        (tmp_path / name).write_text(text)
    lines = [argv for argv in bash_commands() if "--import" in argv]
    assert any("my-magnitude" in argv for argv in lines)
    for argv in lines:
        res = subprocess.run([str(script), *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"{shlex.join(argv)}\n{res.stderr}"
        assert "my-magnitude" in res.stdout


def test_bash_lines_are_plantseek_or_make():
    for argv in bash_commands():
        assert argv[0] in ("plantseek", "make"), f"README bash line not checked by this test: {shlex.join(argv)}"


@pytest.mark.parametrize("argv", [a for a in bash_commands() if a[0] == "plantseek"], ids=shlex.join)
def test_plantseek_lines_parse(argv):
    try:
        args = build_parser().parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"README command does not parse (exit {exc.code}): {shlex.join(argv)}")
    assert getattr(args, "_run", None) is not None, shlex.join(argv)
    for token in argv[1:]:
        if token.startswith("examples/"):
            assert (ROOT / token).is_file(), f"README names a missing file: {token}"


@pytest.mark.parametrize("argv", [a for a in bash_commands() if a[0] == "make"], ids=shlex.join)
def test_make_targets_exist(argv):
    targets = [t for t in argv[1:] if not t.startswith("-") and "=" not in t]
    assert targets, shlex.join(argv)
    missing = [t for t in targets if t not in make_targets()]
    assert not missing, f"README names make targets the Makefile lacks: {missing}"


def test_toml_blocks_are_valid_sweeps():
    for text in blocks("toml"):
        assert len(parse_sweep(text, origin="README.md").runs) > 0
