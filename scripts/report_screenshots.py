"""Run every example into a scratch database, write its HTML data-quality report and take a
screenshot of the report's first screen in headless Chromium, for the README:

    python scripts/report_screenshots.py            # -> docs/reports/<example>.png and sizes

Needs the dev extras (Playwright, Pillow) and Debian's chromium. Examples that read an HTTP API
are served by their own serve.py, as the tests do."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "reports"
HEALTHETL = Path(sys.executable).parent / "healthetl"


def run_example(name: str, work: Path) -> Path:
    folder = work / name
    shutil.copytree(REPO / "examples" / name, folder)
    db = f"sqlite:///{work / (name + '.db')}"
    server = None
    if (folder / "serve.py").exists():
        server = subprocess.Popen(
            [sys.executable, str(folder / "serve.py"), "--port", "0"], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None
        url = server.stdout.readline().strip().removeprefix("serving ").rsplit("/", 1)[0]
        config = folder / "healthetl.toml"
        config.write_text(config.read_text().replace("http://127.0.0.1:8765", url))
    try:
        config = str(folder / "healthetl.toml")
        subprocess.run(
            [str(HEALTHETL), "run", "--config", config, "--db", db], check=True, capture_output=True
        )
        page = work / f"{name}.html"
        subprocess.run(
            [str(HEALTHETL), "report", "--html", str(page), "--config", config, "--db", db],
            check=True,
            capture_output=True,
        )
        return page
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    names = sorted(p.parent.name for p in (REPO / "examples").glob("*/healthetl.toml"))
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        for name in names:
            page_file = run_example(name, Path(tmp))
            page = browser.new_page(viewport={"width": 1280, "height": 960})
            page.goto(page_file.as_uri())
            shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
            page.close()
            shot = shot.resize((960, 720), Image.LANCZOS).quantize(colors=128)
            shot.save(OUT / f"{name}.png", optimize=True)
            print(f"{name}: report {page_file.stat().st_size / 1024:,.0f} KiB -> {OUT / (name + '.png')}")
        browser.close()


if __name__ == "__main__":
    main()
