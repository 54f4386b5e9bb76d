"""Write requirements/lock.txt, or move it and pyproject's upper bounds forward to the newest releases, tested.

    python3.11 scripts/lock.py              # re-lock within pyproject.toml's bounds (keeps current pins if it can)
    python3.11 scripts/lock.py --upgrade    # newest releases: lock, fresh venv, whole suite; bounds raised if green

The lock is ``uv pip compile`` of every extra for Python 3.11 on Linux, a plain requirements file that pip reads as
constraints (``pip install -c requirements/lock.txt ...``, as scripts/install.py does), so users need only pip.

``--upgrade`` lifts the upper bounds of the fast-moving libraries (BOUNDED), resolves their newest releases, builds
a fresh venv from that candidate lock with scripts/install.py, and runs the whole suite in it. Only when the suite
passes does it write the lock and raise each bound in pyproject.toml to the version it passed on; otherwise both
files are left as they were and the candidate lock's path is printed. ``--hold torch`` keeps a package at its
current bound (e.g. where the newest torch is not yet available as the build you need).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import venv
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = REPO / "pyproject.toml"
LOCK = REPO / "requirements" / "lock.txt"
UV_VERSION = "0.13.9"  # the lock tool, itself pinned
# Libraries whose releases have broken a first run before, and the web stack of `personamine serve` (Starlette 1.x
# still moves): pyproject.toml bounds them from above (`<=` or `==`).
BOUNDED = ("torch", "transformers", "datasets", "huggingface_hub", "numpy", "ray", "sae-lens", "eai-sparsify",
           "starlette", "uvicorn")
COMPILE_ARGS = ["--all-extras", "--python-version", "3.11", "--python-platform", "linux", "--no-annotate",
                "--custom-compile-command", "python3.11 scripts/lock.py"]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def uv() -> list[str]:
    """A ``uv`` of UV_VERSION: on PATH if it is that version, else installed once into build/lock-tools."""
    found = shutil.which("uv")
    if found and UV_VERSION in subprocess.run([found, "--version"], capture_output=True, text=True).stdout:
        return [found]
    tools = REPO / "build" / "lock-tools"
    binary = tools / "bin" / "uv"
    if not binary.exists():
        venv.EnvBuilder(with_pip=True).create(tools)
        subprocess.run([str(tools / "bin" / "python"), "-m", "pip", "install", "-q", f"uv=={UV_VERSION}"], check=True)
    return [str(binary)]


def requirement_pattern(name: str) -> re.Pattern[str]:
    """A dependency string of ``name`` in pyproject.toml: its quoted requirement, extras and all."""
    letters = r"[-_.]".join(re.escape(part) for part in re.split(r"[-_.]+", name))
    return re.compile(rf'"(?P<name>{letters})(?P<extras>\[[^\]]*\])?(?P<spec>[^";]*)"', re.IGNORECASE)


def edit_specifiers(text: str, name: str, edit: Callable[[list[str]], list[str]]) -> str:
    """pyproject.toml with ``name``'s version specifiers (``[">=5.0", "<=5.25.0"]``) replaced by ``edit`` of them,
    wherever the package is required."""
    def edited(m: re.Match[str]) -> str:
        parts = [p.strip() for p in m.group("spec").split(",") if p.strip()]
        return f'"{m.group("name")}{m.group("extras") or ""}{",".join(edit(parts))}"'

    return requirement_pattern(name).sub(edited, text)


def lift_bounds(text: str, held: set[str]) -> str:
    """pyproject.toml with the upper bounds of BOUNDED removed (an `==` pin becomes a lower bound)."""
    for name in BOUNDED:
        if normalise(name) not in held:
            text = edit_specifiers(text, name, lambda parts: [p.replace("==", ">=") for p in parts
                                                              if not p.startswith(("<=", "<"))])
    return text


def raise_bounds(text: str, pins: dict[str, str]) -> str:
    """pyproject.toml with each bound of BOUNDED moved to the version the suite passed on."""
    for name in BOUNDED:
        version = pins.get(normalise(name))
        if version is not None:
            text = edit_specifiers(text, name, lambda parts, v=version: [
                f"=={v}" if p.startswith("==") else f"<={v}" if p.startswith("<=") else p for p in parts])
    return text


def pins_of(lock_text: str) -> dict[str, str]:
    pins = {}
    for line in lock_text.splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if m:
            pins.setdefault(normalise(m.group(1)), m.group(2))
    return pins


def compile_lock(pyproject: Path, output: Path, upgrade: bool) -> None:
    cmd = uv() + ["pip", "compile", str(pyproject), *COMPILE_ARGS, "-o", str(output), "--quiet"]
    if upgrade:
        cmd.append("--upgrade")
    subprocess.run(cmd, check=True, cwd=pyproject.parent)


def suite_passes(lock: Path) -> bool:
    """scripts/install.py test into a fresh venv from ``lock``, then the whole suite in it."""
    with tempfile.TemporaryDirectory(prefix="personamine-lock-") as tmp:
        venv_dir = Path(tmp) / "venv"
        install = [sys.executable, str(REPO / "scripts" / "install.py"), "test", "--venv", str(venv_dir),
                   "--lock", str(lock)]
        if subprocess.run(install).returncode != 0:
            return False
        return subprocess.run([str(venv_dir / "bin" / "python"), "-m", "pytest", "-q"], cwd=REPO).returncode == 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upgrade", action="store_true",
                        help="resolve the newest releases past pyproject's upper bounds, run the suite on them, and "
                        "write the lock and raise the bounds only if it passes")
    parser.add_argument("--hold", action="append", default=[], metavar="NAME",
                        help="with --upgrade: keep this bounded package at its current bound (repeatable)")
    args = parser.parse_args(argv)
    if not args.upgrade:
        compile_lock(PYPROJECT, LOCK, upgrade=False)
        print(f"wrote {LOCK.relative_to(REPO)}")
        return

    held = {normalise(n) for n in args.hold}
    work = Path(tempfile.mkdtemp(prefix="personamine-upgrade-"))
    unbounded = work / "pyproject.toml"
    unbounded.write_text(lift_bounds(PYPROJECT.read_text(), held))
    candidate = work / "lock.txt"
    compile_lock(unbounded, candidate, upgrade=True)
    before, after = pins_of(LOCK.read_text()), pins_of(candidate.read_text())
    for name in sorted(set(before) | set(after)):
        if before.get(name) != after.get(name):
            print(f"  {name}: {before.get(name, '-')} -> {after.get(name, '-')}")
    if not suite_passes(candidate):
        print(f"the suite failed on the newest releases: {LOCK.name} and pyproject.toml are unchanged; the "
              f"candidate lock is {candidate}", file=sys.stderr)
        raise SystemExit(1)
    LOCK.write_text(candidate.read_text())
    PYPROJECT.write_text(raise_bounds(PYPROJECT.read_text(), after))
    print(f"the suite passed: wrote {LOCK.relative_to(REPO)} and raised the bounds in pyproject.toml")


if __name__ == "__main__":
    main()
