"""The install as users run it: the README's two commands are the ones CI and the docs use, the lock agrees with
pyproject's bounds, every package the code imports is declared, the docs site builds with no broken link, and the
code is lint-clean. (The installs themselves run in CI, fresh each time: scripts/check_user_paths.py and the test
line of .ci/run.)"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from fixtures import REPO

sys.path.insert(0, str(REPO / "scripts"))
import install  # noqa: E402
import lock  # noqa: E402

README = REPO / "README.md"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
LOCK_TEXT = (REPO / "requirements" / "lock.txt").read_text()


def readme_commands() -> list[str]:
    """The code lines between the README's command markers (comments after `#` dropped)."""
    block = re.search(r"<!-- commands:start -->\s*```bash\n(.*?)```\s*<!-- commands:end -->", README.read_text(),
                      re.DOTALL)
    assert block, "README.md lost its <!-- commands:start --> ... <!-- commands:end --> block"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_shows_exactly_two_commands_a_demo_and_the_suite():
    demo, suite = readme_commands()
    assert demo.startswith("python3.11 scripts/install.py demo") and demo.endswith("personamine demo")
    assert suite.startswith("python3.11 scripts/install.py test") and suite.endswith("-m pytest -q")


def test_ci_runs_the_readme_test_line_and_the_docs_show_both():
    demo, suite = readme_commands()
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert suite in ci_lines, ".ci/run must run the README's test line word for word"
    install_page = (REPO / "docs" / "install.md").read_text()
    assert demo in install_page and suite in install_page


def test_readme_is_a_front_door():
    assert len(README.read_text().splitlines()) <= 200


def test_no_file_cites_notes_the_user_does_not_have():
    # A citation of the developers' private field notes, by section or by path; escaped so that this file does not
    # match its own pattern.
    pattern = re.compile(r"NOTES \u00a7|shared/NOTES\.md")
    offenders = [str(p.relative_to(REPO)) for p in [README, *REPO.glob("docs/*.md"), *REPO.glob("personamine/**/*.py"),
                                                     *REPO.glob("tests/**/*.py"), *REPO.glob("benchmarks/*.py")]
                 if pattern.search(p.read_text())]
    assert offenders == []


def bounded_specs() -> dict[str, str]:
    """Each BOUNDED package's specifier as pyproject.toml declares it (anywhere: dependencies or an extra)."""
    specs = {}
    for requirement in [*PYPROJECT["project"]["dependencies"],
                        *(r for extra in PYPROJECT["project"]["optional-dependencies"].values() for r in extra)]:
        m = re.match(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?(.*)", requirement)
        name = lock.normalise(m.group(1))
        if name in {lock.normalise(b) for b in lock.BOUNDED}:
            specs.setdefault(name, m.group(3))
    return specs


def test_every_fast_moving_library_is_bounded_at_the_version_the_lock_pins():
    pins = lock.pins_of(LOCK_TEXT)
    specs = bounded_specs()
    assert set(specs) == {lock.normalise(b) for b in lock.BOUNDED}
    for name, spec in specs.items():
        upper = re.search(r"(<=|==)([^,\s]+)", spec)
        assert upper, f"{name} has no upper bound in pyproject.toml: {spec!r}"
        assert upper.group(2) == pins[name], f"{name}: pyproject says {spec}, the lock pins {pins[name]}"


def test_lock_upgrade_lifts_then_raises_the_bounds():
    text = (REPO / "pyproject.toml").read_text()
    lifted = lock.lift_bounds(text, held={"torch"})
    assert '"transformers>=5.0"' in lifted and '"ray[default]>=2.60.0"' in lifted
    assert '"torch>=2.4,<=2.13.0"' in lifted  # held
    raised = lock.raise_bounds(text, {"transformers": "9.1.0", "ray": "3.0.0", "numpy": "3.0"})
    assert '"transformers>=5.0,<=9.1.0"' in raised and '"ray[default]==3.0.0"' in raised
    assert '"numpy>=1.26,<=3.0"' in raised
    assert lock.raise_bounds(text, lock.pins_of(LOCK_TEXT)) == text  # the committed bounds are the lock's


def test_install_paths_name_real_extras_and_pinned_no_deps_packages():
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    assert {extra for extra, _ in install.PATHS.values() if extra} <= extras
    assert install.locked_version(install.LOCK, "torch") == lock.pins_of(LOCK_TEXT)["torch"]
    for line in install.NO_DEPS.read_text().splitlines():
        requirement = line.split("#")[0].strip()
        if requirement:
            assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][^\s]*", requirement), requirement


def third_party_imports(paths: list[Path]) -> dict[str, str]:
    """Top-level module -> first file importing it, for modules that are neither stdlib nor personamine."""
    found: dict[str, str] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                     else [])
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "personamine":
                    found.setdefault(top, str(path.relative_to(REPO)))
    return found


def declared_names() -> set[str]:
    """Every distribution pyproject.toml or requirements/no-deps.txt declares, normalised."""
    requirements = [*PYPROJECT["project"]["dependencies"],
                    *(r for extra in PYPROJECT["project"]["optional-dependencies"].values() for r in extra),
                    *(line.split("#")[0].strip() for line in install.NO_DEPS.read_text().splitlines())]
    return {lock.normalise(re.match(r"[A-Za-z0-9_.-]*", r).group(0)) for r in requirements if r}


@pytest.mark.parametrize("folder", ["personamine", "tests", "benchmarks", "scripts"])
def test_every_package_the_code_imports_is_declared(folder):
    """A module imported anywhere in the repo comes from a distribution pyproject.toml (or no-deps.txt) names
    itself: leaning on a transitive dependency is how a release breaks a fresh install."""
    distributions = importlib.metadata.packages_distributions()
    declared = declared_names()
    files = sorted((REPO / folder).glob("**/*.py"))
    # the repo's own helper modules (fixtures, _common, install, ...), which tests, benchmarks and scripts share
    local = {p.stem for top in ("tests", "benchmarks", "scripts") for p in (REPO / top).glob("**/*.py")}
    undeclared = {}
    for module, where in third_party_imports(files).items():
        owners = {lock.normalise(d) for d in distributions.get(module, [])}
        if module not in local and not owners & declared:
            undeclared[module] = (where, sorted(owners))
    assert undeclared == {}


def test_ruff_is_clean():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "personamine", "tests", "benchmarks", "scripts"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_docs_site_builds_strict_with_no_broken_link(tmp_path):
    pytest.importorskip("mkdocs", reason="the [docs] extra (in [test]) builds the site")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's banner about MkDocs 2, not a warning
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(site)],
                          cwd=REPO, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "index.html").is_file()


def test_no_test_module_imports_another():
    """Helpers that several test modules share live in tests/fixtures.py (plain) or tests/conftest.py (fixtures), not
    in one of them: a fixture imported from a test module is set up again for each importer (the report tests once
    started a Chromium per module that way), and a test module's helpers are free to change with its tests."""
    paths = sorted([*(REPO / "tests").glob("**/*.py"), *(REPO / "benchmarks").glob("*.py")])
    assert any(p.name == "test_install.py" for p in paths)
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = ([node.module] if node.module else []) + [f"{node.module or ''}.{a.name}" for a in node.names
                                                                 if node.level > 0]
            else:
                continue
            if any(part.startswith("test_") for name in names for part in name.split(".")):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert found == []
