"""The browser's part of opsd-bench's console scenario: loads /console in a
real Chromium (driven by Playwright, from scripts/console-venv) and prints, as
one JSON object on stdout, the time of each load from navigation start to the
first page's rows being in the document (the `opsd:first-page` mark the
console sets once it has rendered them).

Each load has a browser context of its own (an empty cache and new
connections, like a first visit); the browser process itself stays up."""

import argparse
import json
import sys

from playwright.sync_api import sync_playwright

# As tests/console/conftest.py launches it.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MARK = "opsd:first-page"


def one_load(browser, url: str, rows: int) -> float:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url + "/console")
        # Functions, not expressions: the console's CSP forbids eval.
        page.wait_for_function("(mark) => performance.getEntriesByName(mark).length > 0", arg=MARK, timeout=30_000)
        at = page.evaluate("(mark) => performance.getEntriesByName(mark)[0].startTime", MARK)
        shown = page.evaluate("document.querySelectorAll('#rows tr').length")
        if shown != rows:
            raise SystemExit(f"the first page shows {shown} rows, not {rows}")
        if errors:
            raise SystemExit(f"the page failed: {errors}")
        return float(at)
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--chromium", required=True)
    parser.add_argument("--loads", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rows", type=int, required=True, help="rows the first page must show")
    args = parser.parse_args()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        try:
            for _ in range(args.warmup):
                one_load(browser, args.url, args.rows)
            times = [one_load(browser, args.url, args.rows) for _ in range(args.loads)]
            version = browser.version
        finally:
            browser.close()
    json.dump({"chromium": version, "times_ms": times}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
