"""README stays true: every config key documented, every make target and command it names exists."""

import re
import sys
from pathlib import Path

from train import __main__ as cli
from train import config

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_config_reference_is_current():
    """Regenerate with `python scripts/config_reference.py`."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import config_reference

    assert config_reference.render(README) == README
    for key, _, _ in config.describe():
        assert f"| `{key}` |" in README, key


def test_readme_figures_equal_the_json_they_came_from():
    """Regenerate with `python scripts/readme_figures.py` after a bench or a quickstart run."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import readme_figures

    for name, (path, _) in readme_figures.BLOCKS.items():
        if f"<!-- figures:{name}:start -->" in README:
            assert path.is_file(), f"README quotes {name} figures but {path} is missing"
    assert readme_figures.render(README) == README


def test_every_make_target_in_the_readme_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z-]+):", makefile, re.MULTILINE))
    for target in set(re.findall(r"\bmake ([a-z-]+)", README)):
        assert target in targets, target


def test_every_python_m_train_command_in_the_readme_parses():
    parser = cli._parser()
    for line in re.findall(r"-m train (\w+[^\n`|]*)", README):
        args = line.split()
        parser.parse_args(
            [a for a in args if not a.startswith("#")][:1] + ["--config", "configs/quickstart.yaml"]
        )


def test_ci_runs_the_readme_test_command():
    assert "make test" in README and "make test" in (ROOT / ".ci/run").read_text()
