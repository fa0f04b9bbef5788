"""The Gradio demo (app.py) on a tiny random model, served on 127.0.0.1 and driven with gradio_client."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from tiny import TINY_ENCODER, tiny_text_config, tiny_tokenizer

from modeling_opentslm import OpenTSLMConfig, OpenTSLMForCausalLM, OpenTSLMProcessor
from opentslm_hub.series_io import read_series_table

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
EXAMPLE_NILE = "Nile flow at Aswan, 1871-1970"
ACTIVITY_EXAMPLE, ACTIVITY_TASK = (
    "Accelerometer while walking (BasicMotions, held out)",
    "Activity (3-axis accelerometer)",
)


def tiny_model_and_processor():
    tokenizer = tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<ts>"]})
    processor = OpenTSLMProcessor(tokenizer=tokenizer, use_chat_template=True)
    torch.manual_seed(0)
    config = OpenTSLMConfig(
        text_config=tiny_text_config("llama", len(tokenizer)),
        encoder_config=TINY_ENCODER,
        ts_token_id=processor.ts_token_id,
    )
    return OpenTSLMForCausalLM(config).eval(), processor


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    import app

    model, processor = tiny_model_and_processor()
    demo = build = app.build_demo(model, processor, label="tiny random model", untrained=True, search_token_budget=48)
    assert build is demo
    app.launch(demo, server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield gradio_client.Client(demo.local_url, verbose=False, download_files=str(tmp_path_factory.mktemp("dl")))
    finally:
        demo.close()


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def test_import_has_no_side_effects():
    code = (
        "import sys, app; "
        "assert 'gradio' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules); "
        "assert app.load_model.cache_info().currsize == 0"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_prompts_and_rewards():
    import app

    assert app.build_prompt("Caption", "", "", 6, ["x"]) == (app.PRE_PROMPT, app.CAPTION_PROMPT)
    pre, post = app.build_prompt("Question with options", "Is it rising?", "yes; no", 6, ["x"])
    assert pre == "Is it rising?\n(a) yes\n(b) no" and post.endswith("Answer:")
    assert "next 4 values of the flow series" in app.build_prompt("Forecast", "", "", 4, ["flow", "y"])[1]
    with pytest.raises(ValueError, match="at least two options"):
        app.build_prompt("Question with options", "Is it rising?", "yes", 6, ["x"])
    with pytest.raises(ValueError, match="Type a question"):
        app.build_prompt("Your question", " ", "", 6, ["x"])
    assert app.make_reward("Your question", np.zeros((1, 8)), 4) is None
    names, values = app.example_series(app.EXAMPLES[1])
    assert names == ["prey", "predator"] and values.shape == (2, 120)
    pre, post = app.build_prompt(app.ACTIVITY_TASK, "", "", 6, ["x", "y", "z"])
    assert "badminton, running, standing, walking." in pre and post == "Rationale:"
    assert [text.split(",")[0] for text in app.series_texts(app.ACTIVITY_TASK, ["a", "b", "c"])] == [
        f"The following is the accelerometer data on the {axis}-axis" for axis in "xyz"
    ]
    with pytest.raises(ValueError, match="3-axis accelerometer: 3 columns .* this series has 2 column"):
        app.build_prompt(app.ACTIVITY_TASK, "", "", 6, ["x", "y"])


def test_reader_limits():
    names, values = read_series_table(b"a,b\n1,2\n3,4\n")
    assert names == ["a", "b"] and values.tolist() == [[1, 3], [2, 4]]
    assert read_series_table(b"1\n2\n")[0] == ["channel 1"]
    with pytest.raises(ValueError, match="3 rows; the limit is 2"):
        read_series_table(b"1\n2\n3\n", max_rows=2)
    with pytest.raises(ValueError, match="3 columns; the limit is 2"):
        read_series_table(b"1,2,3\n", max_columns=2)
    with pytest.raises(ValueError, match="is 24 bytes; the limit is 10 bytes"):
        read_series_table(b"1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n", max_bytes=10)


def test_upload_and_answer(client, tmp_path):
    from gradio_client import handle_file

    path = write(
        tmp_path, "two.csv", "temp,load\n" + "\n".join(f"{np.sin(i / 3):.3f},{i * 0.1:.1f}" for i in range(40))
    )
    plot, message = client.predict(handle_file(path), api_name="/upload_csv")
    assert "two.csv: 2 channel(s) (temp, load), 40 time steps." in message
    assert plot is not None
    answer, info = client.predict(
        "Caption", "", "", 6, 16, False, False, api_name="/answer"
    )  # the State input is kept by the client's session
    assert isinstance(answer, str) and "Done (greedy" in info

    # streamed: the job reports growing partial answers
    job = client.submit("Your question", "Is it rising?", "", 6, 24, True, False, api_name="/answer")
    outputs = job.result() and job.outputs()
    assert len(outputs) >= 2 and isinstance(outputs[-1][0], str)


def test_search_reports_statistics(client, tmp_path):
    from gradio_client import handle_file

    client.predict(
        handle_file(write(tmp_path, "s.csv", "\n".join(str(i % 7) for i in range(32)))), api_name="/upload_csv"
    )
    answer, table = client.predict("Forecast", "", "", 3, 16, True, True, api_name="/answer")
    assert "--- MaxEnt-TS answer ---" in answer
    for row in ("rollouts", "tokens processed", "reward of the chosen answer", "reward of the plain answer (sampling"):
        assert row in table
    _, info = client.predict("Your question", "why?", "", 3, 16, False, True, api_name="/answer")
    assert "MaxEnt-TS needs a reward" in info


def test_activity_task_on_the_accelerometer_example(client, tmp_path):
    from gradio_client import handle_file

    import app

    _, message = client.predict(app.EXAMPLES[3], api_name="/load_example")
    assert "3 channel(s) (x, y, z), 100 time steps." in message
    assert client.predict(app.ACTIVITY_TASK, 64, api_name="/choose_task") == app.ACTIVITY_MIN_NEW_TOKENS
    assert client.predict(app.ACTIVITY_TASK, 200, api_name="/choose_task") == 200
    assert client.predict("Caption", 64, api_name="/choose_task") == 64
    answer, info = client.predict(app.ACTIVITY_TASK, "", "", 6, 8, False, False, api_name="/answer")
    assert isinstance(answer, str) and "Done (greedy" in info
    client.predict(handle_file(write(tmp_path, "one.csv", "\n".join(map(str, range(20))))), api_name="/upload_csv")
    _, info = client.predict(app.ACTIVITY_TASK, "", "", 6, 8, False, False, api_name="/answer")
    assert "opentslm-error" in info and "3-axis accelerometer" in info and "has 1 column(s)" in info


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("image.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00", "not a CSV file"),
        ("words.csv", "a,b\n1,2\n3,x\n", "line 3, column &#x27;b&#x27;: &#x27;x&#x27; is not a number"),
        ("nan.csv", "a\n1\nnan\n", "not a finite number (NaN or inf)"),
        ("empty.csv", "", "is empty"),
        ("ragged.csv", "1\n2,3\n", "not a well-formed CSV"),
        ("long.csv", "\n".join(["1"] * 300), "300 rows; the limit is 256"),  # the tiny encoder's maximum
        ("wide.csv", ",".join(["1"] * 13), "13 columns; the limit is 12"),
        ("big.csv", "1\n" * 600_000, "is 1.2 MB; the limit is 1 MB"),
    ],
)
def test_bad_uploads_show_a_message(client, tmp_path, name, content, message):
    from gradio_client import handle_file

    plot, shown = client.predict(handle_file(write(tmp_path, name, content)), api_name="/upload_csv")
    assert 'class="opentslm-error"' in shown and message in shown, shown
    assert "Traceback" not in shown


def test_answer_without_series_and_bad_model(tmp_path):
    from gradio_client import handle_file

    import app

    model, processor = tiny_model_and_processor()
    demo = app.build_demo(model, processor)
    app.launch(demo, prevent_thread_lock=True, quiet=True)
    try:
        client = gradio_client.Client(demo.local_url, verbose=False)
        _, info = client.predict("Caption", "", "", 6, 16, False, False, api_name="/answer")
        assert "Upload a CSV or pick an example first." in info
        shown, _ = client.predict(str(tmp_path / "missing"), "", api_name="/load_model")
        assert "Could not load" in shown and "opentslm-error" in shown
        _, message = client.predict(app.EXAMPLES[2], api_name="/load_example")
        assert "168 time steps" in message
        # another model, from a local folder: it answers from now on, and it is not flagged as untrained
        folder = tmp_path / "saved"
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        shown, limits = client.predict(str(folder), "", api_name="/load_model")
        assert f"Model: {folder}." in shown and "untrained" not in shown and "at most 256 rows" in limits
        _, info = client.predict("Caption", "", "", 6, 8, False, False, api_name="/answer")
        assert f"Done (greedy, {folder})." in info
        # a prompt longer than the LLM's context is refused with a message
        app.load_model(str(folder), None).model.config.text_config.max_position_embeddings = 512
        wide = "\n".join(",".join(str(k + i % 5) for k in range(12)) for i in range(200))
        client.predict(handle_file(write(tmp_path, "wide.csv", wide)), api_name="/upload_csv")
        _, info = client.predict("Caption", "", "", 6, 8, False, False, api_name="/answer")
        assert "this model takes at most 512" in info and "Use fewer rows or channels" in info
    finally:
        demo.close()
        importlib.import_module("app").load_model.cache_clear()


@pytest.mark.slow
def test_python_app_py_serves_the_offline_default(tmp_path, smollm2_dir):
    """`python app.py` on a free port: the shipped default model on the offline SmolLM2, an example, an answer."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), OMP_NUM_THREADS="2")
    env.pop("OPENTSLM_MODEL", None)
    log = open(tmp_path / "app.log", "w")
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 180
        while True:
            try:
                client = gradio_client.Client(url, verbose=False)
                break
            except Exception:
                assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "app.log").read_text()
                time.sleep(1)
        _, message = client.predict(EXAMPLE_NILE, api_name="/load_example")
        assert "100 time steps" in message
        answer, info = client.predict("Caption", "", "", 6, 8, False, False, api_name="/answer")
        assert answer.strip() and "Done (greedy, the offline default model (OpenTSLM-SP" in info
        # stage 3 of its curriculum: a held-out accelerometer recording, a rationale ending in the right activity
        client.predict(ACTIVITY_EXAMPLE, api_name="/load_example")
        answer, info = client.predict(ACTIVITY_TASK, "", "", 6, 160, False, False, api_name="/answer")
        assert answer.rstrip().endswith("Answer: walking"), answer
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
