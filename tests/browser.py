"""Headless Chromium (Debian's ``chromium``, driven by Playwright) for checks of pages as a
browser renders them. Without Chromium the tests skip, except under ``CI=true``, where its
absence fails them (``.ci/run`` installs it)."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but Chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("Chromium is not installed: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Rendered:
    requests: list[str] = field(default_factory=list)
    charts: list[dict[str, Any]] = field(default_factory=list)
    headings: list[str] = field(default_factory=list)
    screenshot: bytes = b""


def render_page(browser: Any, path: Path, screenshot: Path | None = None) -> Rendered:
    """Open a local file: every request it makes, its charts (size, shapes drawn, ink in their
    screenshot), its headings, and a screenshot of the whole page."""
    from PIL import Image

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    out = Rendered()
    page.on("request", lambda r: out.requests.append(r.url))
    try:
        page.goto(path.resolve().as_uri())
        page.wait_for_load_state("load")
        out.headings = [h.strip() for h in page.locator("h1, h2, h3").all_inner_texts()]
        for chart in page.locator("svg.chart").all()[:12]:
            box = chart.bounding_box() or {"width": 0, "height": 0}
            image = Image.open(io.BytesIO(chart.screenshot())).convert("RGB")
            colours = image.getcolors(maxcolors=1 << 16) or []
            inked = sum(n for n, rgb in colours if rgb != (255, 255, 255))
            out.charts.append(
                {
                    "label": chart.get_attribute("aria-label"),
                    "width": box["width"],
                    "height": box["height"],
                    "shapes": chart.locator("rect, polyline, circle, line").count(),
                    "ink": inked / max(image.width * image.height, 1),
                }
            )
        out.screenshot = page.screenshot(full_page=True)
        if screenshot is not None:
            screenshot.write_bytes(out.screenshot)
    finally:
        page.close()
    return out
