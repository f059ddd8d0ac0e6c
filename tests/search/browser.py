"""A fresh headless Chromium that looks at a page the way a new user does (tests/search).

It drives the system Chromium over the DevTools protocol with choreographer, which kaleido
already brings for the report's PNGs: a new profile each time, so nothing the browser
remembers (MLflow keeps a GenAI / Model training choice per browser) hides what a first
visit shows. `look` waits, in real time, until a probe finds what it waits for: a page
drawn in a sandboxed iframe (MLflow's HTML artifact view) runs in a renderer process of
its own, which Chromium's `--virtual-time-budget` does not wait for.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def look(url: str, probe: str, screenshot: Path, *, frame_url: str | None = None,
         timeout_s: float = 90.0) -> Any:
    """Open url in a fresh browser and evaluate the JavaScript expression `probe` every half
    second until it returns a truthy value (or timeout_s passes); return its last value.

    `frame_url`: evaluate it in the first iframe whose URL starts with this, not the page.
    The screen (1400x900) is saved to `screenshot` either way, for a failing test to show.
    """
    return asyncio.run(_look(url, probe, screenshot, frame_url, timeout_s))


async def _look(url: str, probe: str, screenshot: Path, frame_url: str | None,
                timeout_s: float) -> Any:
    import choreographer

    async with choreographer.Browser(CHROMIUM, headless=True) as browser:
        tab = await browser.create_tab("")
        await tab.send_command("Emulation.setDeviceMetricsOverride", params={
            "width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": False})
        await tab.send_command("Page.navigate", params={"url": url})
        deadline, value = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            session = tab if frame_url is None else await _frame_session(browser, frame_url)
            if session is not None:
                value = await _evaluate(session, probe)
                if value:
                    break
            await asyncio.sleep(0.5)
        shot = await tab.send_command("Page.captureScreenshot", params={"format": "png"})
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["result"]["data"]))
        return value


async def _frame_session(browser: Any, url_prefix: str) -> Any:
    """A DevTools session in the iframe whose URL starts with url_prefix, or None yet."""
    from choreographer.protocol.devtools_async import Target

    targets = await browser.send_command("Target.getTargets")
    for info in targets["result"]["targetInfos"]:
        if info["type"] == "iframe" and info["url"].startswith(url_prefix):
            # An out-of-process frame is a target of its own; choreographer attaches to it
            # through the browser's connection (its broker).
            target = Target(info["targetId"], browser._broker)  # noqa: SLF001
            return await target.create_session()
    return None


async def _evaluate(session: Any, expression: str) -> Any:
    response = await session.send_command("Runtime.evaluate", params={
        "expression": expression, "returnByValue": True, "awaitPromise": True})
    result = response.get("result", {})
    if "exceptionDetails" in result:
        return None  # the page is not there yet (an element the probe reads is missing)
    return result.get("result", {}).get("value")


def text_of(value: Any) -> str:
    """A probe's value as one line for an assertion message."""
    return json.dumps(value)[:2000]
