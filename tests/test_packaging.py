"""A wheel is a working product: built from the source, installed in a fresh venv, it
creates a project (`mailer init`, from the package data alone) and previews a message.

Offline: the wheel is built with the setuptools of the test environment
(--no-build-isolation) and installed with --no-index. The fresh venv sees mailer's
dependencies through a .pth line naming the test environment's site-packages (a plain path:
the .pth files there, among them the editable install of this checkout, are not run), so
`mailer` itself can only come from the wheel, which the test asserts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from mailer.scaffold import SHIPPED

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _run(*args: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, (args, result.stdout[-3000:], result.stderr[-3000:])
    return result


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel, built from a copy of what goes into it (the checkout stays clean of
    build/ and *.egg-info, whatever else runs in it), and the build's verbose output."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "mailer", source / "mailer",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    result = _run(sys.executable, "-m", "pip", "wheel", ".", "--no-deps",
                  "--no-build-isolation", "-v", "-w", work / "dist", cwd=source, env=env)
    wheels = list((work / "dist").glob("mailer-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0], result.stdout + result.stderr


def test_the_build_warns_of_nothing(built):
    _, log = built
    # e.g. SetuptoolsDeprecationWarning (a licence table), BuildBackendWarning (data
    # folders that look like packages); "warning: ... byte-compiling is disabled" is pip's
    # notice, not a warning class.
    flagged = [line for line in log.splitlines()
               if "Warning" in line or "deprecat" in line.lower()]
    assert not flagged, "\n".join(flagged)


def test_the_wheel_ships_the_scaffold_and_the_licence(built):
    wheel, _ = built
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read("mailer-0.1.0.dist-info/METADATA").decode()
    shipped = {f"mailer/scaffold/{p.relative_to(SHIPPED).as_posix()}"
               for p in SHIPPED.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert {"mailer/scaffold/templates/newsletter.html.j2",
            "mailer/scaffold/lists/nieuwsbrief.toml"} <= shipped
    assert shipped <= names, sorted(shipped - names)
    assert "mailer/migrations/script.py.mako" in names
    assert "mailer-0.1.0.dist-info/licenses/LICENSE" in names
    assert "License-Expression: MIT" in metadata
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    for name in ("pydantic", "lxml", "sqlalchemy"):
        assert any(line.split()[1].lower().startswith(name) for line in requires), name
    aiosmtplib = next(line for line in requires if "aiosmtplib" in line)
    assert "<" in aiosmtplib  # used below its public API: bounded above


def test_an_installed_wheel_creates_and_previews_a_project(built, tmp_path):
    wheel, _ = built
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MAILER_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
         "--no-index", wheel, cwd=tmp_path, env=env)
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                     cwd=tmp_path, env=env).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "zz_test_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")

    where = _run(python, "-c", "import mailer, mailer.scaffold; print(mailer.__file__); "
                 "print(mailer.scaffold.SHIPPED)", cwd=tmp_path, env=env).stdout.split()
    assert all(Path(p).resolve().is_relative_to(venv.resolve()) for p in where), where

    mailer = venv / "bin" / "mailer"  # the console script the wheel declares
    _run(mailer, "init", "news", cwd=tmp_path, env=env)
    project = tmp_path / "news"
    assert (project / "templates" / "partials" / "signature.html.j2").is_file()
    assert (project / "templates" / "web" / "page.html.j2").is_file()
    assert (project / "lists" / "nieuwsbrief.example.csv").is_file()
    _run(mailer, "lists", "sync", cwd=project, env=env)
    _run(mailer, "templates", "check", "templates/newsletter.html.j2", cwd=project, env=env)
    _run(mailer, "preview", "--template", "templates/newsletter.html.j2", "--out", "preview",
         cwd=project, env=env)
    html = (project / "preview" / "message.html").read_text(encoding="utf-8")
    assert "Voorbeeld vzw" in html and 'style="' in html
    assert "Met vriendelijke groeten" in (project / "preview" / "message.txt").read_text(
        encoding="utf-8")
