"""The README and docs as a newcomer reads them (short, every link resolves, every example runs), the house as
docs/design.md describes it (no import cycle), and nothing committed that names a folder of the machine that
made it."""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "verification" / "README.md"]
PAGES = [p for p in PAGES if p.is_file()]


def test_the_readme_reads_in_five_minutes():
    assert len((ROOT / "README.md").read_text()) <= 10_000


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_resolves(page):
    text = page.read_text()
    links = [m for m in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+://|#|mailto:", m)]
    missing = [m for m in links if not (page.parent / m.split("#")[0]).exists()]
    assert not missing, missing


def _python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), re.S)


EXAMPLES = [(ROOT / "README.md", i) for i in range(len(_python_blocks(ROOT / "README.md")))]
EXAMPLES += [(ROOT / "docs" / "diagnostics.md", 0)]


@pytest.mark.parametrize("page, index", EXAMPLES, ids=[f"{p.name}[{i}]" for p, i in EXAMPLES])
def test_the_examples_run(page, index, one_thread):
    code = _python_blocks(page)[index]
    exec(compile(code, f"{page.name}[{index}]", "exec"), {})


def _module_imports() -> dict:
    """jfb module -> the jfb modules it imports at module level (what Python runs when it is imported)."""
    src = ROOT / "src"
    graph = {}
    for path in (src / "jfb").rglob("*.py"):
        parts = list(path.relative_to(src).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if parts[-1] == "__init__" else name.rpartition(".")[0]
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t.startswith("jfb")}
        graph[name] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_no_import_cycle_among_the_modules():
    graph, state, cycles = _module_imports(), {}, []

    def visit(m, stack):
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    # a package imports its own modules in __init__: that is not a cycle unless a module imports the package back
    real = [c for c in cycles if not all(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(c, c[1:]))]
    assert not real, real


MACHINE_PATH = re.compile(r"(?<![\w.$<])/(?:work|tmp|home|root|Users|mnt|scratch)/[\w.-]")


def test_no_committed_file_names_a_folder_of_the_machine_that_made_it():
    """Records and reports write paths relative to the repository or a named placeholder ($DATA_DIR, ...)."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    found = []
    for name in files:
        path = ROOT / name
        if name == "tests/test_docs.py" or not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += [f"{name}: {m.group(0)}" for m in MACHINE_PATH.finditer(text)]
    assert not found, found[:20]
