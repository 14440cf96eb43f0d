"""The version matrix: the test suite against each supported openai line and wrapt 1.x.

    nox                      # every session (interpreters not installed are skipped)
    nox -l                   # list them
    nox -s "tests(3.10-openai-oldest)" -- -x tests/test_instrument.py

Arguments after `--` replace the default pytest arguments. The newest openai and
wrapt on the default interpreter are what `make test` runs; the matrix covers the rest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nox
from packaging.version import Version

# The oldest openai release the SDK supports (stated in the README), overridable
# to try another one: TRAKET_OPENAI_OLDEST=1.50.0 nox -s ...
OPENAI_OLDEST = os.environ.get("TRAKET_OPENAI_OLDEST", "1.40.0")

# openai before 1.55.3 passes `proxies=` to httpx, which httpx 0.28 removed.
OPENAI_WITH_HTTPX_PROXIES = Version("1.55.3")

OPENAI_LINES = {
    "oldest": f"openai=={OPENAI_OLDEST}",
    "1.x": "openai>=1,<2",
    "2.x": "openai>=2,<3",
    "3.x": "openai>=3,<4",
}

# Python 3.10 (the oldest supported) and 3.13 get every openai line; 3.14 gets the
# newest one where it is installed. A missing interpreter is skipped, not an error:
# this machine has no 3.14, and nox says so when it skips the session.
MATRIX = [
    *(("3.10", line) for line in OPENAI_LINES),
    *(("3.13", line) for line in OPENAI_LINES),
    ("3.14", "3.x"),
]

# What a session runs unless given arguments after `--`: the tests that depend on the
# openai and wrapt versions (instrumentation, the replayed recordings, usage
# mapping, the demo), without the browser and slow tests, so that the whole matrix
# fits in CI's time. `make test` runs everything on the newest versions.
MATRIX_TESTS = (
    "tests/test_instrument*.py",
    "tests/test_recordings*.py",
    "tests/test_usage*.py",
    "tests/test_demo*.py",
)
MATRIX_MARKERS = "not browser and not slow"

# The tests whose behaviour depends on the interpreter itself: exit hooks (no thread
# may start at shutdown from 3.12 on), fork, context variables, the event builder.
RUNTIME_TESTS = (
    "tests/test_sender_exit.py",
    "tests/test_sender_fork.py",
    "tests/test_scope.py",
    "tests/test_event.py",
)

nox.options.sessions = ["tests", "wrapt1", "runtime"]
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = False
nox.options.download_python = "never"


def _find_pyenv_interpreters() -> None:
    """Let nox find pyenv's other interpreters through its shims.

    pyenv's shim for `python3.13` only runs when 3.13 is an active version, so
    interpreters that pyenv has installed look missing to nox. Activating every
    installed version after the current one keeps `python3` as it was and makes
    `python3.10` and `python3.13` resolve.
    """
    pyenv = shutil.which("pyenv")
    if pyenv is None or os.environ.get("PYENV_VERSION"):
        return

    def lines(*args: str) -> list[str]:
        result = subprocess.run(
            [pyenv, *args], capture_output=True, text=True, check=False
        )
        return result.stdout.split() if result.returncode == 0 else []

    current = lines("version-name")
    installed = [v for v in lines("versions", "--bare") if v[:1].isdigit()]
    if current:
        os.environ["PYENV_VERSION"] = ":".join(current[:1] + installed)


_find_pyenv_interpreters()


def _install(session: nox.Session, *requirements: str) -> None:
    """Install the project for testing with the given pins, in one resolve."""
    extras = "dev"
    project = nox.project.load_toml("pyproject.toml")["project"]
    if "test" in project.get("optional-dependencies", {}):
        extras = "test,openai,prices,local"
    session.install("-e", f".[{extras}]", *requirements)


def _openai_requirements(line: str) -> list[str]:
    requirements = [OPENAI_LINES[line]]
    if line == "oldest" and Version(OPENAI_OLDEST) < OPENAI_WITH_HTTPX_PROXIES:
        requirements.append("httpx<0.28")
    return requirements


def _default_pytest_args() -> list[str]:
    paths = sorted({str(p) for pattern in MATRIX_TESTS for p in Path().glob(pattern)})
    return ["-m", MATRIX_MARKERS, "-p", "no:cacheprovider", *paths]


def _pytest(session: nox.Session, default_args: list[str] | None = None) -> None:
    session.run(
        "python",
        "-c",
        "import sys, openai, wrapt; "
        "print(f'python {sys.version.split()[0]}, openai {openai.__version__}, "
        "wrapt {wrapt.__version__}')",
    )
    # pytest's exit code 5 (no test collected) fails the session like any other.
    args = session.posargs or default_args or _default_pytest_args()
    session.run("python", "-m", "pytest", *args)


@nox.session
@nox.parametrize(
    ("python", "openai"),
    [nox.param(python, line, id=f"{python}-openai-{line}") for python, line in MATRIX],
)
def tests(session: nox.Session, openai: str) -> None:
    """Run the tests against one openai line."""
    _install(session, *_openai_requirements(openai))
    _pytest(session)


@nox.session(python=["3.10", "3.13"])
def wrapt1(session: nox.Session) -> None:
    """Run the tests with the newest wrapt 1.x and the newest openai."""
    _install(session, "wrapt>=1.14,<2", OPENAI_LINES["3.x"])
    _pytest(session)


@nox.session(python=["3.10", "3.13", "3.14"])
def runtime(session: nox.Session) -> None:
    """Run the interpreter-dependent tests (exit, fork, contextvars) on each Python."""
    _install(session, OPENAI_LINES["3.x"])
    _pytest(session, ["-m", MATRIX_MARKERS, "-p", "no:cacheprovider", *RUNTIME_TESTS])
