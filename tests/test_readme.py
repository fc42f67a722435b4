"""README.md and docs/ stay true: every config key documented, every figure equal to the JSON it came from, every
command they name runs as written: each make target and variable exists, each `instructify` command and each
flag parses with the real parser (instructify.cli._parser()), each script flag is one the script defines, each repo
path exists."""

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

from instructify import cli, config

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
PAGES = {
    p.relative_to(ROOT).as_posix(): p.read_text()
    for p in [ROOT / "README.md", *sorted(ROOT.glob("docs/*.md"))]
}
MAKEFILE = (ROOT / "Makefile").read_text()
sys.path.insert(0, str(ROOT / "scripts"))

# Flags of other programs the pages show, each with the program that must be named beside it.
EXTERNAL = {
    "--multi_gpu": "accelerate launch",
    "--num_processes": "accelerate launch",
    "--nproc_per_node": "torch.distributed.run",
    "--nodes": "sbatch",
    "--signal": "SLURM",
    "--jinja": "llama-server",
    "--checks": "schemathesis",
    "--exclude-checks": "schemathesis",
    "--max-examples": "schemathesis",
}


def commands(text: str) -> list[str]:
    """Every line of a shell code block and every inline code span, comments cut off, spans joined across lines."""
    found, prose, fence = [], [], None
    for line in text.splitlines():
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
        elif fence is None:
            prose.append(line)
        elif fence in ("bash", "sh", ""):
            found.append(re.split(r"\s+#\s", line)[0].strip())
    found += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", "\n".join(prose))]
    return [c for c in found if c]


def is_command(text: str) -> bool:
    first = text.split()[0]
    return first in (
        "instructify",
        "make",
        "python",
        "sbatch",
        "cd",
        "echo",
        "curl",
        "llama-server",
        "vllm",
    ) or first.startswith(".venv/bin/")


def page_commands():
    return [(name, c) for name, text in PAGES.items() for c in commands(text)]


# How a page runs us: the `instructify` command (on PATH or in .venv/bin), or `-m instructify` under a launcher.
INVOKED = re.compile(r"(?:(?<![\w./-])(?:\.venv/bin/)?instructify|-m instructify)(?= [\w-])")


def _arguments(command: str) -> list[str]:
    """The arguments our parser gets from `command` (a shell line may pipe into it)."""
    part = next(p for p in re.split(r"\s(?:\||&&|;)\s", command) if INVOKED.search(p))
    words = [w for w in shlex.split(part.replace("\\|", "|")) if w != "\\"]
    at = next(i for i, w in enumerate(words) if w == "instructify" or w.endswith("/instructify"))
    return words[at + 1 :]


def _subcommands() -> dict:
    parser = cli._parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def _make_targets() -> dict[str, str]:
    """{target: its recipe}."""
    recipes = {}
    for m in re.finditer(r"^([a-z][a-z-]*):[^\n]*\n((?:\t[^\n]*\n?)*)", MAKEFILE, re.MULTILINE):
        recipes[m.group(1)] = m.group(2)
    return recipes


def _parses(words: list[str], where: str) -> None:
    try:
        cli._parser().parse_args(words)
    except SystemExit as e:  # argparse exits 2 on an error, 0 for --help
        assert e.code == 0, f"{where}: `instructify {' '.join(words)}` does not parse"


def test_config_reference_is_current():
    """Regenerate with `python scripts/config_reference.py`."""
    import config_reference

    page = PAGES["docs/config-reference.md"]
    assert config_reference.render(page) == page
    for key, _, _ in config.describe():
        assert f"| `{key}` |" in page, key


def test_support_matrix_is_rendered_from_test_results_of_every_family_and_stage():
    """Regenerate with `python scripts/support_matrix.py` (it runs tests/test_families.py)."""
    import families
    import support_matrix
    from test_families import STAGES

    record = json.loads((ROOT / "docs" / "support.json").read_text())
    assert support_matrix.render(record) == PAGES["docs/support.md"]
    assert list(record["tests"]) == list(families.FAMILIES)
    assert all(set(stages) == set(STAGES.values()) for stages in record["tests"].values())


def test_figures_equal_the_json_they_came_from():
    """Regenerate with `python scripts/readme_figures.py` after a bench or a quickstart run."""
    import readme_figures

    assert set(readme_figures.PAGES) == {ROOT / name for name in PAGES}
    quoted = set()
    for name, text in PAGES.items():
        for block, (path, _) in readme_figures.BLOCKS.items():
            if f"<!-- figures:{block}:start -->" in text:
                assert path.is_file(), f"{name} quotes {block} figures but {path} is missing"
                quoted.add(block)
        assert readme_figures.render(text) == text, name
    assert quoted == set(readme_figures.BLOCKS)  # every block is quoted somewhere


def test_readme_is_a_front_door_to_docs():
    assert len(README.splitlines()) <= 200
    linked = set(re.findall(r"\]\((docs/[\w-]+\.md)", README))
    assert linked == {name for name in PAGES if name.startswith("docs/")}
    for name, text in PAGES.items():
        for target in re.findall(r"\]\(([\w./-]+\.md)", text):
            assert (ROOT / name).parent.joinpath(target).resolve().is_file(), f"{name} links to {target}"


def test_every_instructify_command_parses_with_its_flags():
    seen = 0
    for name, command in page_commands():
        if not INVOKED.search(command):
            continue
        _parses(_arguments(command), name)
        seen += 1
    assert seen >= 10


def test_every_make_command_names_a_target_its_variables_and_flags():
    recipes = _make_targets()
    variables = set(re.findall(r"^([A-Z_]+)\s*[?:]?=", MAKEFILE, re.MULTILINE))
    subcommands = _subcommands()
    seen = 0
    for name, command in page_commands():
        for m in re.finditer(r"\bmake ([a-z][a-z-]*)((?: [A-Z_]+=(?:\"[^\"]*\"|'[^']*'|\S+))*)", command):
            target = m.group(1)
            assert target in recipes, f"{name}: `make {target}` is no Makefile target"
            settings = dict(w.split("=", 1) for w in shlex.split(m.group(2)))
            assert set(settings) <= variables, f"{name}: `{m.group(0)}` sets a variable the Makefile lacks"
            args = shlex.split(settings.get("ARGS", ""))
            runs = re.search(r"(?:-m instructify|\$\(BIN\)/instructify|\$\(LAUNCH\)) (\w+)", recipes[target])
            script = re.search(r"(scripts/\w+\.py)", recipes[target])
            if runs and runs.group(1) in subcommands:
                _parses([runs.group(1), "--config", "configs/quickstart.yaml", *args], name)
            elif script:
                source = (ROOT / script.group(1)).read_text()
                for flag in (a.split("=")[0] for a in args if a.startswith("--")):
                    assert f'"{flag}"' in source, f"{name}: {script.group(1)} has no {flag} (`{m.group(0)}`)"
            seen += 1
    assert seen >= 20


def test_every_flag_named_is_one_its_program_defines():
    """Flags in prose and tables (`--max-batch`, `--data`) too: each is an option of a `instructify` command, of
    a script its paragraph names (itself or through a make target), or of another program named beside it."""
    ours = {flag for parser in _subcommands().values() for flag in parser._option_string_actions}
    scripts = {p.relative_to(ROOT).as_posix(): p.read_text() for p in ROOT.glob("scripts/*.py")}
    recipes = _make_targets()
    for name, text in PAGES.items():
        for paragraph in re.split(r"\n\s*\n", text):
            targets = re.findall(r"\bmake ([a-z][a-z-]*)", paragraph)
            named = [s for s in scripts if s in paragraph or any(s in recipes.get(t, "") for t in targets)]
            for module in re.findall(r"-m (instructify(?:\.\w+)+)", paragraph):  # a module run as a program
                path = ROOT / (module.replace(".", "/") + ".py")
                if path.is_file():
                    scripts[module] = path.read_text()
                    named.append(module)
            # each command, and the paragraph with its code spans cut out
            for command in [*commands(paragraph), re.sub(r"`[^`]*`", "", paragraph)]:
                launcher = INVOKED.split(command)[0]  # what follows is parsed by the test above
                for flag in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", launcher):
                    if flag in EXTERNAL:
                        assert EXTERNAL[flag] in paragraph, (
                            f"{name}: {flag} without {EXTERNAL[flag]} beside it"
                        )
                    else:
                        assert flag in ours or any(f'"{flag}"' in scripts[s] for s in named), (
                            f"{name}: {flag} is no option of `instructify` nor of {named} ({command[:80]})"
                        )


def test_every_repo_path_in_a_command_exists():
    for name, command in page_commands():
        if not is_command(command):
            continue
        for word in re.findall(r"(?<![\w/.-])((?:configs|data|scripts|bench|docs)/[\w./-]*\w)", command):
            if not any(c in word for c in "*<"):
                assert (ROOT / word).exists(), f"{name}: {word} does not exist (`{command[:80]}`)"


PLANTS = [
    ("`instructify serve --max-batches 8`", test_every_instructify_command_parses_with_its_flags),
    (
        "```bash\n.venv/bin/instructify inspect --datta x.jsonl\n```",
        test_every_instructify_command_parses_with_its_flags,
    ),
    ("| `--max-batches` | 8 | requests decoded together |", test_every_flag_named_is_one_its_program_defines),
    ("`make bench-serve` (`--request 32`)", test_every_flag_named_is_one_its_program_defines),
    (
        '`make inspect ARGS="--datta data/example.jsonl"`',
        test_every_make_command_names_a_target_its_variables_and_flags,
    ),
    ("`make serve MODLE=runs/x/model`", test_every_make_command_names_a_target_its_variables_and_flags),
    ("`make serv`", test_every_make_command_names_a_target_its_variables_and_flags),
    ("`make train CONFIG=configs/quickstart.yml`", test_every_repo_path_in_a_command_exists),
]


@pytest.mark.parametrize("bad, check", PLANTS, ids=[p[0][:40] for p in PLANTS])
def test_a_planted_mistake_is_caught(bad, check, monkeypatch):
    """Each check above fails on a mistake planted in a copy of a page."""
    check()
    monkeypatch.setitem(PAGES, "docs/serving.md", PAGES["docs/serving.md"] + f"\n\n{bad}\n")
    with pytest.raises(AssertionError):
        check()


def test_ci_runs_the_readme_test_command():
    assert "make test" in README and "make test" in (ROOT / ".ci/run").read_text()
