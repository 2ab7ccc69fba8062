"""The documentation, tested: every code block marked runnable runs, links resolve, every test
that docs/operations.md names exists, and CI runs the README's test command.

A block is runnable when the line before its opening ```python fence is ``<!-- runnable -->``
(see docs/index.md). Each runs as a script in a subprocess, as a user would paste them one after
the other: all in one directory and against one database (given as ``ASYNCFLOW_DATABASE_URL``;
the test server as ``ASYNCFLOW_TEST_DATABASE_URL``, for the test kit's examples), in page order
with the README's quick start first -- so two pages sharing a workflow id fail here. (Under
pytest-xdist they stay on one worker: ``xdist_group``, with ``--dist loadgroup``.)
"""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, python_env
from faultlib import admin, with_database

MARKER = "<!-- runnable -->"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Pages the docs link to that another change adds (the lead's architecture page).
PENDING_PAGES = {"docs/architecture.md"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    code: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def runnable_blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    blocks = []
    in_fence = False  # a marker shown inside a code block is an example, not a marker
    for index, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        if in_fence or line.strip() != MARKER:
            continue
        fence = lines[index + 1] if index + 1 < len(lines) else ""
        assert fence.strip() == "```python", (
            f"{page.name}:{index + 1}: {MARKER} must be followed by a ```python block")
        end = next(i for i in range(index + 2, len(lines)) if lines[i].strip() == "```")
        blocks.append(Block(page, index + 2, "\n".join(lines[index + 2:end]) + "\n"))
    return blocks


BLOCKS = [block for page in PAGES for block in runnable_blocks(page)]


@pytest.fixture(scope="module")
def shared_db_url(server_url: str, template_db: str) -> Iterator[str]:
    """One database for every example of the docs, as a user's one directory would have."""
    name = f"asyncflow_docs_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"'))
    yield with_database(server_url, name)
    asyncio.run(admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one directory every example runs in."""
    return tmp_path_factory.mktemp("docs-examples")


@pytest.mark.slow  # a Python process each
@pytest.mark.xdist_group("docs")
@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
async def test_runnable_block(
    block: Block, shared_db_url: str, server_url: str, shared_dir: Path
) -> None:
    tmp_path = shared_dir
    script = tmp_path / "example.py"
    script.write_text(block.code)
    env = python_env()
    env["ASYNCFLOW_DATABASE_URL"] = shared_db_url
    env["ASYNCFLOW_TEST_DATABASE_URL"] = server_url  # for docs/testing.md's test kit examples
    env.pop("ASYNCFLOW_DATA_DIR", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 120)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, f"{block.name} failed:\n{out.decode()}"


def test_the_readme_quick_start_is_runnable_and_short() -> None:
    readme = runnable_blocks(ROOT / "README.md")
    assert readme, "the README's quick start must be marked runnable"
    quick_start = readme[0].code
    assert len(quick_start.splitlines()) <= 20
    assert "AsyncFlow()" in quick_start  # the embedded default: no URL in the code
    # The main pages have runnable examples too.
    marked = {block.page.name for block in BLOCKS}
    assert {"guide.md", "communication.md", "web.md"} <= marked


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = {line for line in readme.splitlines()
                if "python -m pytest" in line and line.startswith("python3 -m venv")}
    assert len(commands) == 1, commands  # one test command, the same wherever it is shown
    command = commands.pop()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command in ci_lines
    # The other set-up command runs the quick start on the embedded default.
    assert any(line.startswith("python3 -m venv") and "'.[embedded]'" in line
               and line.endswith("examples/quickstart.py") for line in readme.splitlines())


def test_links_between_pages_resolve() -> None:
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if str(path.relative_to(ROOT)) in PENDING_PAGES:
                continue
            assert path.exists(), f"{page.relative_to(ROOT)} links to missing {target}"


def test_every_test_named_in_operations_exists() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    named = 0
    # `::test_x*` names every test whose name starts with test_x (at least one must exist).
    pattern = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+\*?))?[^`]*`|`::(\w+\*?)[^`]*`")
    for row in (line for line in text.splitlines() if line.startswith("|")):
        current: Path | None = None  # `::test_x` refers to the file named before it
        for match in pattern.finditer(row):
            file_part, test = match.group(1), match.group(2) or match.group(3)
            if file_part:
                current = ROOT / file_part
                assert current.is_file(), file_part
            if test:
                assert current is not None, row
                source = current.read_text()
                name = rf"{test[:-1]}\w*" if test.endswith("*") else test
                assert re.search(rf"^(async )?def {name}\(", source, re.M), (
                    f"{current.relative_to(ROOT)}::{test} is named in docs/operations.md")
                named += 1
    assert named > 40


def test_install_commands_name_the_distribution_not_the_pypi_project() -> None:
    # `pip install 'asyncflow[web]'` installs the unrelated PyPI project "asyncflow": every
    # install command in the docs and in messages says asyncflow-pg, or installs a clone.
    wrong = re.compile(r"(?<![\w/.-])asyncflow\[")
    files = [*PAGES, *(ROOT / "asyncflow").rglob("*.py"), *(ROOT / "examples").glob("*.py"),
             *(ROOT / "benchmarks").rglob("*.py"), ROOT / "pyproject.toml"]
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in files for number, line in enumerate(path.read_text().splitlines(), 1)
             if wrong.search(line)]
    assert not found, "use 'asyncflow-pg[...]' or a clone's path:\n" + "\n".join(found)


@pytest.mark.slow
async def test_quick_start_then_observability_and_testing_pages_in_one_directory(
    tmp_path: Path,
) -> None:
    # As pasted by a user, with nothing configured: every example on the embedded Postgres of
    # the one directory (./.asyncflow) where the quick start already ran, and the test kit's
    # examples on their own embedded server.
    env = python_env()
    for name in ("ASYNCFLOW_DATABASE_URL", "ASYNCFLOW_TEST_DATABASE_URL", "ASYNCFLOW_DATA_DIR"):
        env.pop(name, None)
    pages = [ROOT / "README.md", ROOT / "docs" / "observability.md", ROOT / "docs" / "testing.md"]
    blocks = [runnable_blocks(pages[0])[0]] + [b for page in pages[1:]
                                                for b in runnable_blocks(page)]
    for block in blocks:
        script = tmp_path / "example.py"
        script.write_text(block.code)
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(script), cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(process.communicate(), 180)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 0, (
            f"{block.name} failed after the quick start:\n{out.decode()}")


def test_the_examples_extra_installs_what_the_runnable_web_examples_use() -> None:
    # FastAPI's TestClient needs httpx, which FastAPI does not install; the web page's example
    # uses it, so the `examples` extra (the one the page names) must bring it.
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    examples = {re.split(r"[<>=\[ ]", req)[0] for req in extras["examples"]}
    page = (ROOT / "docs" / "web.md").read_text()
    assert "'.[examples]'" in page
    for block in runnable_blocks(ROOT / "docs" / "web.md"):
        if "TestClient" in block.code:
            assert "httpx" in examples
        if "fastapi" in block.code:
            assert "fastapi" in examples


def test_the_dashboard_routes_table_lists_every_route_and_action() -> None:
    from asyncflow._dashboard._actions import ACTIONS
    from asyncflow._dashboard._app import Dashboard

    page = (ROOT / "docs" / "dashboard.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| `/")]
    listed = set(re.findall(r"`(/[^`?\[]*)", "\n".join(rows)))
    for path in Dashboard._ROUTES:
        assert path in listed, f"docs/dashboard.md's routes table omits {path}"
    for name in ACTIONS:
        assert f"/action/{name}" in listed, f"docs/dashboard.md's routes table omits {name}"


def test_the_constructor_has_one_home_listing_every_argument() -> None:
    import inspect

    import asyncflow

    names = [name for name in inspect.signature(asyncflow.AsyncFlow).parameters]
    home = (ROOT / "docs" / "configuration.md").read_text()
    for name in names:
        assert f"    {name}=" in home, f"configuration.md's constructor omits {name}="
    # No other page repeats the list (a copy goes stale: the guide's lacked retention=).
    for page in PAGES:
        if page.name == "configuration.md":
            continue
        text = page.read_text()
        listed = [name for name in names if f"    {name}=" in text]
        assert len(listed) < 4, f"{page.name} repeats the constructor's arguments {listed}"


def test_operation_is_the_one_word_for_numbered_journal_entries() -> None:
    # The older names (and "function id") may appear only where a page says they are older
    # names; the dashboard's fork form field keeps its wire name.
    old = re.compile(r"list_workflow_steps|workflow steps\b|--from-step|from_step|function id",
                     re.IGNORECASE)
    found = [f"{page.relative_to(ROOT)}:{number}: {line.strip()}"
             for page in PAGES if page.name != "architecture.md"
             for number, line in enumerate(page.read_text().splitlines(), 1)
             if old.search(line) and "older name" not in line and "form fields" not in line]
    assert not found, "say operation (number):\n" + "\n".join(found)


def test_the_suite_uses_every_core_prints_its_time_and_has_a_quick_subset() -> None:
    import tomllib

    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines()
                   if line.startswith("python3 -m venv") and "python -m pytest" in line)
    assert "-n logical" in command and "--dist loadgroup" in command  # docs' examples: one worker
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert any(req.startswith("pytest-xdist") for req in
               project["project"]["optional-dependencies"]["dev"])
    markers = project["tool"]["pytest"]["ini_options"]["markers"]
    assert any(marker.startswith("slow:") for marker in markers)
    assert '-m "not slow"' in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "trap 'echo \"== test suite wall time: $((SECONDS - started)) s\"' EXIT" in ci
    assert ci.index("started=$SECONDS") < ci.index(command)
