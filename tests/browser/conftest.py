"""What the browser tests start: Debian's Chromium driven by Playwright, and JupyterLab on a free loopback
port. `make test-browser` installs Playwright and sets KITTEST_BROWSER_TESTS=1; `make test` skips these.

The browser may reach loopback only: every other request is aborted, so a page that needs the internet
fails here as it would on an offline laptop (and no test traffic leaves the machine).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from browser_support import BIN, CHROMIUM, CHROMIUM_FLAGS, LOOPBACK, Server, free_port


def _loopback_only(route) -> None:
    url = urlparse(route.request.url)
    if url.scheme in ("data", "blob", "file") or url.hostname in LOOPBACK:
        route.continue_()
    else:
        route.abort("internetdisconnected")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A headless Chromium context with a fresh profile; pages opened in it reach loopback only."""
    if not CHROMIUM.is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set KITTEST_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is not installed: make test-browser installs it")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(30_000)
        context.route("**/*", _loopback_only)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """JupyterLab on a free loopback port with a token, serving a temp folder with a copy of momentum.ipynb.

    Its config, settings, workspaces and runtime files live in that folder too, and the kernel's ledger
    (KIT_DB) and kit.toml: nothing of the user's is read or written. No news or update checks.
    """
    base = tmp_path_factory.mktemp("lab")
    root = base / "root"
    root.mkdir()
    shutil.copy(Path(__file__).resolve().parents[2] / "notebooks" / "momentum.ipynb", root / "momentum.ipynb")
    settings = base / "settings"
    for plugin, values in {
        # Every cell in the DOM, and the notebook's kernel started without asking which one.
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none", "autoStartDefaultKernel": True},
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = os.environ | {
        "KIT_DB": str(base / "kit.duckdb"), "KIT_CONFIG": str(base / "kit.toml"),
        "JUPYTER_CONFIG_DIR": str(base / "config"), "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
    }
    port, token = free_port(), secrets.token_hex(16)
    server = Server([str(BIN / "jupyter"), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                     f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
                     f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                     # no news, update or PyPI look-ups
                     "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
                     "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
                    + (["--allow-root"] if os.geteuid() == 0 else []), env, root)
    try:
        server.wait_for(rf"http://127\.0\.0\.1:{port}/lab", timeout=60)
        yield {"url": f"http://127.0.0.1:{port}", "token": token, "db": base / "kit.duckdb", "root": root,
               "server": server}
    finally:
        server.stop()
