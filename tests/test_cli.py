import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main, parse_lengths


def test_lengths_accept_k_suffix():
    assert parse_lengths("1024,8k,0.5k") == [1024, 8192, 512]


@pytest.mark.parametrize("argv,message", [
    (["run", "--methods", "nosuch"], "unknown method 'nosuch'"),
    (["run", "--methods", "dense:backend=warp"], "backend='warp'"),
    (["run", "--model", "nosuch"], "unknown model 'nosuch'"),
    (["run", "--task", "nosuch"], "unknown task 'nosuch'"),
    (["run", "--lengths", "12q"], "is not a length"),
    (["run", "--device", "tpu"], "unknown device 'tpu'"),
    (["run", "--samples", "0"], "--samples must be at least 1"),
    (["run", "--resume", "/nonexistent/run"], "not a run folder"),
    (["nosuch"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path)] if argv[0] == "run" else argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not any(tmp_path.iterdir())


def test_methods_lists_options_with_defaults(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "dense:" in out and "backend (str) = auto" in out


def test_run_writes_cells_with_ttft_text_and_provenance(tmp_path, capsys):
    code = main(["run", "--model", "smollm2-135m", "--methods", "dense,eager", "--lengths", "256,300",
                 "--out", str(tmp_path), "--no-progress", "--max-new-tokens", "4"])
    assert code == 0
    (folder,) = tmp_path.iterdir()
    assert str(folder) in capsys.readouterr().out
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["git_commit"] and manifest["packages"]["transformers"] and manifest["device"] == "cpu"
    cells = [json.loads(line) for line in (folder / "cells.jsonl").read_text().splitlines()]
    assert [(c["method"], c["length"]) for c in cells] == [("dense", 256), ("eager", 256), ("dense", 300), ("eager", 300)]
    for cell in cells:
        assert cell["status"] == "ok" and cell["ttft_ms"] > 0 and cell["prompt_tokens"] == cell["length"]
        assert isinstance(cell["prediction"], str) and 1 <= cell["new_tokens"] <= 4
    # dense and the fp32 reference see the same prompt: same greedy text
    assert cells[0]["prediction"] == cells[1]["prediction"]


def test_resume_reruns_only_the_missing_cells(tmp_path, capsys):
    argv = ["run", "--methods", "dense", "--lengths", "200,220", "--out", str(tmp_path), "--no-progress",
            "--max-new-tokens", "2"]
    assert main(argv) == 0
    (folder,) = tmp_path.iterdir()
    cells_path = folder / "cells.jsonl"
    first, second = cells_path.read_text().splitlines()
    cells_path.write_text(first + "\n" + second[:40])  # as if killed while writing the second cell
    assert main(["run", "--resume", str(folder), "--no-progress"]) == 0
    assert "resumed=1" in capsys.readouterr().out
    cells = [json.loads(line) for line in cells_path.read_text().splitlines() if line.endswith("}")]
    assert [c["length"] for c in cells] == [200, 220]
    assert cells[0] == json.loads(first)


ROOT = Path(__file__).resolve().parents[1]

BLOCK_NETWORK = """
import socket, sys
def blocked(*args, **kwargs):
    sys.stderr.write("NETWORK ATTEMPT\\n")
    raise OSError("network blocked by the test")
socket.socket.connect = blocked
socket.create_connection = blocked
socket.getaddrinfo = blocked
from harness.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_an_uncached_hub_id_fails_at_once_without_touching_the_network(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    env.update(PYTHONPATH=str(ROOT), HF_HOME=str(tmp_path / "hf"))  # an empty hub cache
    out = tmp_path / "runs"
    result = subprocess.run([sys.executable, "-c", BLOCK_NETWORK, "run", "--model", "no-such-org/no-such-model",
                             "--out", str(out), "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "NETWORK ATTEMPT" not in result.stderr
    assert "not in the local cache" in result.stderr and "--download" in result.stderr
    assert not out.exists()


def bad_model(kind, tmp_path):
    if kind == "empty folder":
        (tmp_path / "empty").mkdir()
        return ["--model", str(tmp_path / "empty")]
    if kind == "junk gguf":
        (tmp_path / "junk.gguf").write_bytes(b"not a model at all" * 10)
        return ["--model", str(tmp_path / "junk.gguf")]
    if kind == "uncached hub id":
        return ["--model", "no-such-org/no-such-model"]
    return ["--lengths", "0"]


@pytest.mark.parametrize("kind,message", [("empty folder", "no config.json"), ("junk gguf", "not a GGUF file"),
                                          ("uncached hub id", "not in the local cache"),
                                          ("zero length", "at least 1 token")])
def test_bad_model_or_length_writes_no_run_folder(kind, message, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["run", *bad_model(kind, tmp_path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not out.exists()


def test_a_model_that_fails_to_load_leaves_no_folder_and_its_whole_cause_on_one_line(tmp_path, capsys):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')  # passes the checks, has no tokenizer or weights
    out = tmp_path / "runs"
    assert main(["run", "--model", str(folder), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: could not load") and len(err[-1]) > 80
    assert not out.exists() or not any(out.iterdir())


def test_resume_extends_the_grid_with_new_methods_and_lengths_and_refuses_other_changes(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--no-progress", "--max-new-tokens", "2"]
    assert main(["run", "--methods", "dense", "--lengths", "200", *argv]) == 0
    (folder,) = tmp_path.iterdir()
    capsys.readouterr()
    assert main(["run", "--resume", str(folder), "--methods", "streaming:window=64", "--lengths", "200,216",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "extending the run's grid with lengths: 216; methods: streaming:window=64" in err
    cells = [json.loads(line) for line in (folder / "cells.jsonl").read_text().splitlines()]
    assert sorted((c["method_spec"], c["length"]) for c in cells) == [
        ("dense", 200), ("dense", 216), ("streaming:window=64", 200), ("streaming:window=64", 216)]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["spec"]["lengths"] == [200, 216] and manifest["extended"]
    assert main(["run", "--resume", str(folder), "--seed", "5", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--seed differs" in err and "\n" not in err


def test_dense_note_once_and_a_skipped_length_says_how_to_time_it(tmp_path, capsys):
    argv = ["run", "--methods", "streaming:window=64", "--lengths", "200,9000", "--out", str(tmp_path),
            "--no-progress", "--max-new-tokens", "2"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("adding the dense baseline") == 1
    assert err.count("length 9000 is beyond") == 1 and "--beyond-context times them" in err
    (folder,) = tmp_path.iterdir()
    assert main(["run", "--resume", str(folder), "--no-progress"]) == 0
    assert "adding the dense baseline" not in capsys.readouterr().err


def test_help_shows_defaults_and_only_the_flags_a_subcommand_uses(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: dense)" in text and "(default: 1024,2048)" in text and "default: passkey" in text
    with pytest.raises(SystemExit):
        main(["diagnose", "--help"])
    text = capsys.readouterr().out
    assert "--max-new-tokens" not in text and "--repeats" not in text and "--rows" in text
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    text = capsys.readouterr().out
    assert "--methods" not in text and "--task" not in text and "--resume" not in text


def test_methods_explain_their_options(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    streaming = out.split("streaming:")[1]
    density = next(line for line in streaming.splitlines() if line.strip().startswith("density"))
    assert " -- " in density and len(density.split(" -- ")[1]) > 10  # its own comment says what it does


def test_user_runs_go_where_git_ignores_them():
    from harness.cli import OUT, build_parser

    assert build_parser().parse_args(["run"]).out == OUT
    ignored = subprocess.run(["git", "check-ignore", "-q", f"{OUT}/20260101-000000-run"], cwd=ROOT)
    assert ignored.returncode == 0


@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_an_unwritable_out_is_one_line_exit_2_before_any_model_loads(where, tmp_path, capsys, monkeypatch):
    from harness.running import driver

    def never(*args, **kwargs):
        raise AssertionError("a model was loaded before the run folder was made")

    monkeypatch.setattr(driver, "load_model", never)
    (tmp_path / "plain").write_text("not a folder")
    out = tmp_path / "plain" if where == "a file" else tmp_path / "plain" / "runs"
    assert main(["run", "--out", str(out), "--no-progress", "--lengths", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--out {out}: cannot create a run folder there" in err and "\n" not in err


def test_the_bar_counts_finished_cells_and_a_log_gets_one_line_per_cell(tmp_path, capsys, monkeypatch):
    from harness.running import driver, runner

    bars, seen = [], []

    class Recording(driver.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    measure = runner.RunMeasure.__call__

    def recording_measure(self, *args):
        seen.append((bars[0].n, bars[0].postfix))  # what the cell bar (the first) shows while this cell runs
        return measure(self, *args)

    monkeypatch.setattr(driver, "tqdm", Recording)
    monkeypatch.setattr(runner.RunMeasure, "__call__", recording_measure)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: the bar
    argv = ["run", "--methods", "dense", "--lengths", "200,216", "--max-new-tokens", "1"]
    assert main([*argv, "--out", str(tmp_path / "bar")]) == 0
    assert seen == [(0, None), (1, "ok=1")] and bars[0].n == 2 and bars[0].postfix == "ok=2"
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "log"), "--no-progress"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[")]
    assert len(lines) == 2 and lines[0].startswith("[1/2] ") and lines[1].startswith("[2/2] ")
    assert "dense length=216" in lines[1] and ": ok, ttft " in lines[1]


def test_download_without_a_reachable_hub_fails_within_seconds(tmp_path, capsys, monkeypatch):
    import time

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: as a machine without network
    start = time.monotonic()
    assert main(["run", "--download", "--model", "no-such-org/no-such-model", "--out", str(tmp_path)]) == 2
    assert time.monotonic() - start < 10
    err = capsys.readouterr().err.strip()
    assert "the Hugging Face hub (http://127.0.0.1:9) could not be reached" in err and "\n" not in err
    assert "pass --download" not in err and not any(tmp_path.iterdir())


def test_the_hub_probe_accepts_any_answer():
    import http.server
    import threading

    from harness.models import hub

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert hub.unreachable_reason(f"http://127.0.0.1:{server.server_port}") is None
    finally:
        server.shutdown()
    assert hub.unreachable_reason("http://127.0.0.1:9") is not None


def test_an_absurd_length_is_refused_in_one_line_before_anything(tmp_path, capsys, monkeypatch):
    import time

    from harness.running import checks

    monkeypatch.setattr(checks, "physical_memory", lambda: 16 * 2**30)
    start = time.monotonic()
    assert main(["run", "--beyond-context", "--lengths", "1000000000", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--lengths 1000000000: a prompt of 1,000,000,000 tokens needs at least 41 GiB" in err and "\n" not in err
    assert time.monotonic() - start < 5 and not any(tmp_path.iterdir())


def test_a_prompt_that_does_not_fit_in_memory_is_a_cell_error_and_the_run_goes_on(tmp_path, capsys, monkeypatch):
    from tasks.passkey import Passkey

    samples = Passkey.samples

    def short_of_memory(self, tokenizer, lengths, *args, **kwargs):
        if lengths == [216]:
            raise MemoryError
        return samples(self, tokenizer, lengths, *args, **kwargs)

    monkeypatch.setattr(Passkey, "samples", short_of_memory)
    assert main(["run", "--methods", "dense", "--lengths", "216,200", "--out", str(tmp_path), "--no-progress",
                 "--max-new-tokens", "1"]) == 0
    (folder,) = tmp_path.iterdir()
    cells = [json.loads(line) for line in (folder / "cells.jsonl").read_text().splitlines()]
    assert [(c["length"], c["status"]) for c in cells] == [(216, "error"), (200, "ok")]
    assert "does not fit in memory" in cells[0]["error"]


def test_the_quick_method_names_are_the_registered_ones():
    from attention.methods import BUILTIN_NAMES
    from attention.registry import METHODS

    assert sorted(BUILTIN_NAMES) == METHODS.names()


@pytest.mark.parametrize("argv", [["run", "--methods", "dense,nosuch"], ["run", "--task", "nosuch"],
                                  ["sweep", "--task", "passkey", "--task", "nosuch:x=1"]])
def test_a_bad_method_or_task_is_refused_before_torch_is_imported(argv):
    probe = ("import sys; from harness.cli import main; code = main(sys.argv[1:]); "
             "print(code, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe, *argv], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert result.stdout.split() == ["2", "False"], result.stderr[-500:]
    assert "unknown" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_ctrl_c_names_the_run_folder_to_resume(tmp_path, capsys, monkeypatch):
    from harness.running import runner

    measure, calls = runner.RunMeasure.__call__, []

    def interrupt_second(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return measure(self, *args)

    monkeypatch.setattr(runner.RunMeasure, "__call__", interrupt_second)
    assert main(["run", "--methods", "dense", "--lengths", "200,216", "--out", str(tmp_path), "--no-progress",
                 "--max-new-tokens", "1"]) == 130
    (folder,) = tmp_path.iterdir()
    assert f"continue with `sampleattn run --resume {folder}`" in capsys.readouterr().err


def test_a_plain_file_as_model_says_it_is_a_file(tmp_path, capsys):
    (tmp_path / "weights.bin").write_bytes(b"x")
    assert main(["run", "--model", str(tmp_path / "weights.bin"), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a file, not a model" in err and "does not exist" not in err


def test_methods_into_a_closed_pipe_is_quiet():
    child = subprocess.Popen([sys.executable, "-m", "harness.cli", "methods"], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    child.stdout.close()  # as `| head` does once it has its lines
    err = child.stderr.read().decode()
    assert child.wait(timeout=120) == 0 and "BrokenPipeError" not in err and "Traceback" not in err


def test_methods_listing_is_self_consistent(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    from attention.methods.sample import RUN

    assert "RUN rows" not in out and f"last {RUN} rows" in out
    streaming = out[out.index("\nstreaming:"):].split("\n")[2:6]
    window = next(line for line in streaming if line.strip().startswith("window "))
    r_w = next(line for line in streaming if line.strip().startswith("r_w "))
    assert "= None" in window and "None" in r_w and "window = 0" not in r_w  # one word for "not given"


def test_reproduce_help_reads_plainly(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "the table's own lengths" in text and "table own" not in text
