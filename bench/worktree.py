"""Another revision's tree beside this one, for the benchmarks that compare trees (--against)."""
import contextlib
import os
import shutil
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def worktree(rev):
    """REV checked out in a temporary directory (a detached git worktree), which is removed,
    worktree and directory, on leaving: a run that stops early leaves nothing behind."""
    path = tempfile.mkdtemp(prefix="credits-rev-")
    try:
        subprocess.run(["git", "worktree", "add", "--detach", path, rev], cwd=ROOT, check=True, capture_output=True)
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", path], cwd=ROOT, capture_output=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)
        shutil.rmtree(path, ignore_errors=True)
