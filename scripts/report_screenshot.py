"""Screenshot the top of a traitlab HTML report in headless Chromium (the docs/ PNGs are made with this).

    python scripts/report_screenshot.py report.html docs/report-two-runs.png [--height 1500]

The first screen is what a reader sees at a glance: the headline and the first charts.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path


def screenshot(html: Path, png: Path, width: int = 1100, height: int = 1500) -> Path:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as profile:
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                  "--force-device-scale-factor=1", f"--window-size={width},{height}", f"--user-data-dir={profile}"):
            opts.add_argument(a)
        drv = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"))
        try:
            drv.get(html.resolve().as_uri())
            png.parent.mkdir(parents=True, exist_ok=True)
            if not drv.get_screenshot_as_file(str(png)):
                raise RuntimeError(f"Chromium could not write {png}")
        finally:
            drv.quit()
    return png


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1100)
    ap.add_argument("--height", type=int, default=1500)
    a = ap.parse_args()
    out = screenshot(a.html, a.png, a.width, a.height)
    print(f"{out}: {out.stat().st_size / 1024:.0f} kB")


if __name__ == "__main__":
    main()
