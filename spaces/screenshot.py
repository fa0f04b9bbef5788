"""Screenshot of the demo answering with the offline default model (the picture in the README).

    PYTHONPATH=. python spaces/screenshot.py --output spaces/demo.png --record 20
    PYTHONPATH=. python spaces/screenshot.py --output spaces/demo-activity.png --activity

Serves app.py's page with the default model, uploads one held-out series of the captioning test split as a CSV,
asks for a caption and waits for the streamed answer, then saves a screenshot. ``--activity`` instead picks the
bundled accelerometer example (a held-out recording) and asks for the activity. Needs the demo extra and Debian's
`chromium` (Playwright drives it; no browser download).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import app

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def held_out_csv(folder: Path, index: int) -> tuple[Path, str]:
    from hub_datasets.offline import load_offline

    record = load_offline("captions_bundled")["test"][index]
    values = record["time_series"][0]["values"]
    name = json.loads(record["metadata"]).get("description", record["id"])
    path = folder / f"{record['id']}.csv"
    path.write_text("value\n" + "\n".join(f"{value:g}" for value in values) + "\n")
    return path, name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="spaces/demo.png")
    parser.add_argument("--record", type=int, default=0, help="index in the captioning test split")
    parser.add_argument("--max_new_tokens", type=int, default=200)
    parser.add_argument("--activity", action="store_true", help="the accelerometer example and the activity task")
    args = parser.parse_args()

    from playwright.sync_api import expect, sync_playwright

    loaded = app.load_model()
    demo = app.build_demo(loaded.model, loaded.processor, label=loaded.label, untrained=loaded.untrained)
    app.launch(demo, prevent_thread_lock=True, quiet=True)
    try:
        with tempfile.TemporaryDirectory() as scratch, sync_playwright() as playwright:
            csv, name = held_out_csv(Path(scratch), args.record)
            browser = playwright.chromium.launch(
                executable_path=shutil.which("chromium"), headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(demo.local_url, wait_until="domcontentloaded")
            page.wait_for_selector("#csv-upload input[type=file]", state="attached", timeout=60_000)
            if args.activity:
                name = app.EXAMPLES[3]
                page.get_by_label("…or a bundled example").click()
                page.get_by_role("option", name=name).click()
                expect(page.locator("#series-message")).to_contain_text("3 channel(s)", timeout=60_000)
                page.get_by_label(app.ACTIVITY_TASK).check()
            else:
                page.set_input_files("#csv-upload input[type=file]", str(csv))
                expect(page.locator("#series-message")).to_contain_text("1 channel(s)", timeout=30_000)
            tokens = page.get_by_label("number input for Max new tokens")
            tokens.fill(str(args.max_new_tokens))
            tokens.press("Enter")
            page.click("#answer-button")
            deadline = time.monotonic() + 900
            while "Done" not in page.inner_text("#answer-info") and time.monotonic() < deadline:
                time.sleep(0.5)
            page.screenshot(path=args.output, full_page=True)
            print(f"{args.output}: {name}\n{page.input_value('#answer textarea')}")
            browser.close()
    finally:
        demo.close()


if __name__ == "__main__":
    main()
