"""The package's floor plan: one name (`instructify`, never shadowed by a user's `train.py`), folders that say what
they hold, imports that flow one way (the import-linter contract in pyproject.toml), and units short enough to
read."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "instructify"
BIN = Path(sys.executable).parent
LONGEST = 80  # lines of a function or class body, docstring included


def _lint_imports(cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_the_command_is_ours_in_a_folder_with_its_own_train(tmp_path):
    """Most ML projects have a train.py or a train/ package; neither may take the place of our command."""
    (tmp_path / "train.py").write_text('print("the user\'s train.py")\n')
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "__init__.py").write_text('print("the user\'s train package")\n')
    (tmp_path / "train" / "__main__.py").write_text('print("the user\'s train package")\n')
    for cmd in ([str(BIN / "instructify"), "--help"], [sys.executable, "-m", "instructify", "--help"]):
        run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith("usage: instructify"), run.stdout[:200]
        assert "the user's" not in run.stdout + run.stderr
        for command in ("train", "sft", "export", "eval", "serve", "doctor"):
            assert command in run.stdout


def test_no_train_package_is_left():
    assert not (ROOT / "train").exists()
    assert not list(PACKAGE.rglob("train.py"))


def test_every_folder_says_in_one_line_what_it_does():
    folders = [p.parent for p in PACKAGE.glob("*/__init__.py")]
    assert {f.name for f in folders} >= {"chat", "data", "evals", "training", "ship", "serving"}
    for folder in [PACKAGE, *folders]:
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
        assert doc and "\n" not in doc, (
            f"{folder}/__init__.py: a one-line docstring says what the folder does"
        )


def test_stages_import_downward_only():
    run = _lint_imports(ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 kept, 0 broken" in run.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The contract is not vacuous: the chat template importing the server (a low stage importing a high one)
    is refused."""
    shutil.copytree(PACKAGE, tmp_path / "instructify", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    template = tmp_path / "instructify" / "chat" / "template.py"
    template.write_text(template.read_text() + "\nfrom instructify.serving import api  # noqa: E402\n")
    run = _lint_imports(tmp_path, {**os.environ, "PYTHONPATH": str(tmp_path)})
    assert run.returncode != 0, run.stdout[-2000:]
    assert "instructify.chat.template -> instructify.serving.api" in run.stdout


def _units(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node, node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_unit_is_short(path):
    long = [
        f"{node.name} ({lines} lines, line {node.lineno})"
        for node, lines in _units(ast.parse(path.read_text()))
        if lines > LONGEST
    ]
    assert not long, f"{path.relative_to(ROOT)}: over {LONGEST} lines: {', '.join(long)}"


SERVING_LONGEST = 60  # the HTTP layer is a thin app over the engine: routes, request models, the bridge


def test_the_server_is_a_thin_app_on_a_maintained_http_stack():
    """No hand-written HTTP server (http.server, socketserver) in the package, and no function of the serving
    layer over SERVING_LONGEST lines."""
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for name in ("BaseHTTPRequestHandler", "http.server", "socketserver"):
            assert name not in text, f"{path.relative_to(ROOT)} uses {name}"
    long = [
        f"{path.name}: {node.name} ({lines} lines)"
        for path in (PACKAGE / "serving").glob("*.py")
        for node, lines in _units(ast.parse(path.read_text()))
        if not isinstance(node, ast.ClassDef) and lines > SERVING_LONGEST
    ]
    assert not long, long
