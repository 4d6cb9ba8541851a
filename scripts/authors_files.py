"""Copy some of the authors' source files into a temporary folder, from their git history or a checkout.

Used by the comparison scripts in this folder; none of the authors' code is kept in this repository.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def _git(git_dir: str, *args: str, what: str) -> str:
    try:
        return subprocess.run(["git", f"--git-dir={git_dir}", *args], capture_output=True, text=True,
                              check=True).stdout
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"error: --authors-git-dir={git_dir!r}: cannot {what} "
                         f"({e.stderr.strip().splitlines()[-1] if e.stderr.strip() else e})")


def copy_files(files, folder: Path, git_dir: str | None, commit: str, checkout: str | None, checkout_flag: str,
               short: bool = False) -> str:
    """``files`` of ``commit`` in ``git_dir`` (or of the folder ``checkout``) written into ``folder``;
    returns where they came from. ``short``: name the commit by its short hash."""
    if git_dir:
        rev = _git(git_dir, "rev-parse", "--short", commit, what=f"resolve {commit}").strip() if short else commit
        for name in files:
            (folder / name).write_text(_git(git_dir, "show", f"{rev}:{name}", what=f"read {rev}:{name}"))
        return f"{rev}:{{{','.join(files)}}} from {git_dir}"
    for name in files:
        src = Path(checkout) / name
        if not src.is_file():
            raise SystemExit(f"error: {checkout_flag}={checkout!r} has no {name}")
        shutil.copy(src, folder / name)
    return f"{{{','.join(files)}}} from {checkout}"
