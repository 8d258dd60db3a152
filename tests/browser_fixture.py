"""A real headless browser for the page tests: Debian's Chromium driven by Playwright (no browser download: Playwright
is pointed at the system binary), with a fresh profile per browser and a fresh context (cookies, storage) per test.

``browser`` (module): Chromium launched headless with the flags a closed network needs (no background networking,
component updates, sync or QUIC, so it opens no connection of its own). Binary: ``$ROUTECRAFT_CHROMIUM``, else
``chromium`` / ``chromium-browser`` on PATH or ``/usr/bin/chromium``.

``page`` (function): a page in a new context (1400 × 1000). When the test fails, a full-page screenshot is saved to
``$ROUTECRAFT_SCREENSHOT_DIR`` (default ``runs/test-screenshots/`` at the repository root) and its path printed.

``save_doc_screenshot(page, name)``: with ``ROUTECRAFT_SAVE_SCREENSHOTS=1``, the page (full) as ``docs/img/<name>``.

When Playwright or Chromium is missing the tests using these skip — or FAIL when ``ROUTECRAFT_REQUIRE_BROWSER=1``
(``.ci/run`` sets it and installs Chromium, so a broken install cannot hide behind skips).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage"]


def require_browser() -> bool:
    return os.environ.get("ROUTECRAFT_REQUIRE_BROWSER", "").strip() not in ("", "0", "false", "no")


def find_chromium() -> Optional[str]:
    env = os.environ.get("ROUTECRAFT_CHROMIUM")
    if env:
        return env if os.access(env, os.X_OK) else None
    for name in ("chromium", "chromium-browser"):
        p = shutil.which(name)
        if p:
            return p
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def _unavailable(reason: str):
    if require_browser():
        pytest.fail(f"ROUTECRAFT_REQUIRE_BROWSER is set but {reason}")
    pytest.skip(reason)


_SHARED: dict = {"users": 0}  # at most one Playwright and one browser in the process at a time


@pytest.fixture(scope="module")
def browser():
    """Module-scoped, and stopped when its module is done: a running sync Playwright holds an asyncio loop in the
    main thread (later tests calling ``asyncio.run`` would fail), and a second one cannot start beside it."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    if "browser" not in _SHARED:
        exe = find_chromium()
        if exe is None:
            _unavailable("no Chromium binary found (apt-get install chromium, or set ROUTECRAFT_CHROMIUM)")
        pw = sync_playwright().start()
        try:
            _SHARED["browser"] = pw.chromium.launch(executable_path=exe, args=ARGS, headless=True)
        except Error as exc:
            pw.stop()
            _unavailable(f"Chromium ({exe}) did not start: {str(exc)[:500]}")
        _SHARED["pw"] = pw
    _SHARED["users"] += 1
    try:
        yield _SHARED["browser"]
    finally:
        _SHARED["users"] -= 1
        if _SHARED["users"] == 0:
            b, pw = _SHARED.pop("browser"), _SHARED.pop("pw")
            try:
                b.close()
            finally:
                pw.stop()


def screenshot_dir() -> Path:
    return Path(os.environ.get("ROUTECRAFT_SCREENSHOT_DIR") or ROOT / "runs" / "test-screenshots")


@pytest.fixture
def page(browser, request):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.errors = []  # uncaught script errors, and console errors but failed loads (a 401 page is one): a test may
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))  # assert there were none (CSP refusals are here)
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" and
          not m.text.startswith("Failed to load resource") else None)
    failed_before = request.session.testsfailed
    yield pg
    if request.session.testsfailed > failed_before:  # this test's call failed (its report is counted before teardown)
        d = screenshot_dir()
        d.mkdir(parents=True, exist_ok=True)
        path = d / (re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-150:] + ".png")
        try:
            pg.screenshot(path=str(path), full_page=True)
            print(f"\nscreenshot of the failed page: {path}")
        except Exception as exc:  # noqa: BLE001 - the page may be gone; the failure itself is what matters
            print(f"\nno screenshot of the failed page: {exc}")
    ctx.close()


def save_doc_screenshot(pg, name: str) -> Optional[Path]:
    """``docs/img/<name>`` from the page when ``ROUTECRAFT_SAVE_SCREENSHOTS=1`` (the screenshots in the docs are
    taken by the test run)."""
    if os.environ.get("ROUTECRAFT_SAVE_SCREENSHOTS", "").strip() in ("", "0", "false", "no"):
        return None
    path = ROOT / "docs" / "img" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(path), full_page=True)
    return path
