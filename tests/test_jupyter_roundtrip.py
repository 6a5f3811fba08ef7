"""Opening and saving a chapter in JupyterLab changes no committed file.

A real Jupyter server (the one JupyterLab runs on, with jupytext's contents manager as the
environment configures it) serves a copy of the chapters; every chapter is opened and saved
through the contents API, once as the `.ipynb` and once as the `.md` (what "Open With →
Jupytext Notebook" does), exactly as JupyterLab's autosave would. The copy is a git repository:
`git status` must be clean afterwards."""
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}).stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A copy of notebooks/ and jupytext.toml in a fresh git repository, served by jupyter server."""
    repo = tmp_path_factory.mktemp("lab")
    for name in ("jupytext.toml", ".gitignore"):  # .gitignore: Jupyter's checkpoints folder
        shutil.copy(ROOT / name, repo)
    shutil.copytree(ROOT / "notebooks", repo / "notebooks",
                    ignore=shutil.ignore_patterns(".*", "*.part", "__pycache__"))
    # each .ipynb newer than its .md, as after `dlbook.record` or a pull that changed only outputs
    for ipynb in (repo / "notebooks").glob("*.ipynb"):
        t = time.time()
        os.utime(ipynb.with_suffix(".md"), (t - 3600, t - 3600))
        os.utime(ipynb, (t, t))
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "chapters as committed")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    token = secrets.token_hex(16)
    cfg = tmp_path_factory.mktemp("jupyter-config")  # no user configuration
    cmd = [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={repo}"]
    if hasattr(os, "getuid") and os.getuid() == 0:
        cmd.append("--allow-root")
    log = open(cfg / "server.log", "w")
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(cfg), "JUPYTER_RUNTIME_DIR": str(cfg / "runtime")}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}/api/contents"

    def call(method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{base}/{path}", data=data, method=method,
                                     headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                call("GET", "")
                break
            except (OSError, urllib.error.URLError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.close()
                    pytest.fail("jupyter server did not start:\n" + (cfg / "server.log").read_text())
                time.sleep(0.3)
        yield repo, call
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_the_server_opens_text_notebooks_with_jupytext(server):
    repo, call = server
    model = call("GET", f"notebooks/{CHAPTERS[0].stem}.md?type=notebook&content=1")
    assert model["type"] == "notebook" and model["content"]["cells"], "jupytext's contents manager is not active"


@pytest.mark.parametrize("suffix", [".ipynb", ".md"])
@pytest.mark.parametrize("ipynb", CHAPTERS, ids=lambda p: p.stem)
def test_open_and_save_changes_no_file(server, ipynb, suffix):
    repo, call = server
    _git(repo, "checkout", "-q", "--", ".")  # each test starts from the committed files
    path = f"notebooks/{ipynb.stem}{suffix}"
    model = call("GET", f"{path}?type=notebook&content=1")
    call("PUT", path, {"type": "notebook", "format": "json", "content": model["content"]})
    changed = _git(repo, "status", "--porcelain")
    diff = _git(repo, "diff", "--stat")
    assert not changed, (f"opening and saving {path} rewrote:\n{changed}\n{diff}\n"
                         f"(a setup cell or jupytext header out of date: python -m dlbook.colab {ipynb.relative_to(ROOT)})")


@pytest.mark.parametrize("ipynb", CHAPTERS, ids=lambda p: p.stem)
def test_the_kernelspec_is_the_one_jupyterlab_writes(ipynb):
    """JupyterLab replaces a notebook's kernelspec with the kernel's own when it opens it; a
    different display name marks the tab unsaved at once, and autosave then rewrites both files."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = json.loads(ipynb.read_text())["metadata"]["kernelspec"]
    installed = KernelSpecManager().get_kernel_spec(spec["name"])
    assert spec["display_name"] == installed.display_name, (
        f"{ipynb.name}: kernelspec display_name {spec['display_name']!r}, JupyterLab writes "
        f"{installed.display_name!r}: python -m dlbook.colab {ipynb.relative_to(ROOT)}")
