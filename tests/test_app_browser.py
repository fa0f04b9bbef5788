"""The demo page in headless Chromium (Playwright with the system's chromium): upload a CSV, see the plot, watch
the answer stream in, see the message for a bad file. Screenshots go to a temporary folder (``OPENTSLM_SCREENSHOTS``
to keep them elsewhere).

Without chromium the test is skipped, except under CI (``CI`` set), where it fails: `.ci/run` installs it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium_or_skip() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (CI runs .ci/run, which installs it with apt-get).")
    pytest.skip("chromium is not installed (apt-get install chromium); the browser test needs it.")


class ScriptedSlowLM:
    """A forward hook that makes a tiny random model write a fixed sentence, one token per forward call, slowly:
    the page should show it growing word by word (``TextIteratorStreamer`` releases whole words)."""

    def __init__(self, token_ids: list[int], delay: float):
        self.token_ids, self.delay, self.calls = token_ids, delay, 0

    def __call__(self, module, args, kwargs, output):
        time.sleep(self.delay)
        with torch.no_grad():
            output.logits[:, -1, :] = -1e4
            output.logits[:, -1, self.token_ids[self.calls % len(self.token_ids)]] = 0.0
        self.calls += 1
        return output


@pytest.fixture
def page_url(tmp_path):
    pytest.importorskip("gradio")
    from test_app import tiny_model_and_processor

    import app

    model, processor = tiny_model_and_processor()
    sentence = " The series rises steadily, then falls sharply after a peak near the middle."
    script = processor.tokenizer.encode(sentence, add_special_tokens=False)
    model.register_forward_hook(ScriptedSlowLM(script, delay=0.05), with_kwargs=True)
    demo = app.build_demo(model, processor, label="tiny random model (test)", untrained=True)
    app.launch(demo, prevent_thread_lock=True, quiet=True)
    try:
        yield demo.local_url
    finally:
        demo.close()


def test_page_in_headless_chromium(page_url, tmp_path):
    executable = chromium_or_skip()
    sync_api = pytest.importorskip("playwright.sync_api")
    shots = Path(os.environ.get("OPENTSLM_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    good = tmp_path / "sensor.csv"
    good.write_text(
        "temperature,humidity\n" + "\n".join(f"{20 + (i % 24) / 4:.2f},{60 - i * 0.2:.1f}" for i in range(96))
    )
    bad = tmp_path / "broken.csv"
    bad.write_text("temperature\n20.5\n21.0\nn/a\n22.0\n")

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(page_url, wait_until="domcontentloaded")
            page.wait_for_selector("#csv-upload input[type=file]", state="attached", timeout=60_000)
            assert "untrained" in page.inner_text("#model-info")
            assert "at most 12" in page.inner_text("#limits")

            page.set_input_files("#csv-upload input[type=file]", str(good))
            sync_api.expect(page.locator("#series-message")).to_contain_text(
                "sensor.csv: 2 channel(s)", timeout=30_000
            )
            plot = page.locator("#series-plot canvas, #series-plot svg").first
            sync_api.expect(plot).to_be_visible(timeout=30_000)
            box = plot.bounding_box()
            assert box and box["width"] > 100 and box["height"] > 100
            page.screenshot(path=str(shots / "1-plot.png"), full_page=True)

            page.click("#answer-button")
            seen = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                value = page.input_value("#answer textarea")
                if value and (not seen or value != seen[-1]):
                    seen.append(value)
                    if len(seen) == 3:
                        page.screenshot(path=str(shots / "2-streaming.png"), full_page=True)
                if "Done" in page.inner_text("#answer-info"):
                    break
                time.sleep(0.03)
            assert "Done" in page.inner_text("#answer-info")
            final = page.input_value("#answer textarea")
            assert final and len(seen) >= 3, seen  # the text grew in steps: streamed
            assert all(final.startswith(partial) for partial in seen)
            assert final.startswith("The series rises steadily, then falls sharply")
            page.screenshot(path=str(shots / "3-answer.png"), full_page=True)

            page.click("#csv-upload button[aria-label=Clear]")  # a loaded file replaces the drop zone
            page.set_input_files("#csv-upload input[type=file]", str(bad))
            error = page.locator("#series-message .opentslm-error")
            sync_api.expect(error).to_be_visible(timeout=30_000)
            sync_api.expect(error).to_contain_text("line 4, column 'temperature': 'n/a' is not a number")
            assert "Traceback" not in page.content()
            page.screenshot(path=str(shots / "4-bad-file.png"), full_page=True)
        finally:
            browser.close()
    assert sorted(path.name for path in shots.glob("*.png")) == [
        "1-plot.png",
        "2-streaming.png",
        "3-answer.png",
        "4-bad-file.png",
    ]
