"""Regenerate docs/figures/app.png: `dia-llama app` on a model, the first bundled example case, in headless Chromium.

    python docs/figures/app_screenshot.py runs/demo/model            # or any model folder (`dia-llama init` for one)

Needs the `[app]` extra, Playwright and Debian's `chromium` (as the browser test in tests/test_app.py).
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--output", default=str(Path(__file__).with_name("app.png")))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--disease", default="pleural effusion", help="the overlay's disease")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from dia_llama.app import launch_app
    from dia_llama.app_handler import EXAMPLE_CASES

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = launch_app(args.model, port=port, block=False)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(demo.local_url)
            page.locator("button", has_text=EXAMPLE_CASES[0].label).first.click()
            page.wait_for_function("() => document.querySelector('#report textarea')?.value.length > 0")
            page.click("#disease input")
            page.locator("ul[role=listbox] li", has_text=args.disease).first.click()
            page.wait_for_timeout(1500)
            page.screenshot(path=args.output, full_page=True)
            browser.close()
    finally:
        demo.close()
    from PIL import Image

    shot = Image.open(args.output).convert("RGB")  # 256 colours: a third of the size, no visible loss
    shot.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(args.output, optimize=True)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
