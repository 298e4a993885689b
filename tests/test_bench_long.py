"""scripts/bench_long.py on the CPU (timings are not evidence): rows, resuming, the rendered table, the memory
bound, and a failed cell that never takes the run down (a poisoning CUDA-style error, a worker that dies, a
cell that hangs, out-of-memory)."""
import json
import os
import subprocess
import sys
from pathlib import Path

from transformers import LlamaConfig

from harness.models import long_prefill
from harness.running import worker
from scripts import bench_long, long_table

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=128, max_position_embeddings=4096)
ILLEGAL = "CUDA error: an illegal memory access was encountered"


def tiny_config(name, layers):
    cfg = LlamaConfig(**TINY)
    cfg.num_hidden_layers = min(layers or 3, 3)
    return cfg


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_worker_writes_rows_resumes_and_renders_the_table(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_long, "model_config", tiny_config)
    argv = ["--device", "cpu", "--lengths", "256,512", "--layers", "2", "--chunk", "128", "--repeats", "2,512=1",
            "--methods", "dense:backend=flash,sample:density=0.2,r_w=0.025", "--warmup-length", "128",
            "--check-length", "256", "--out", str(tmp_path), "--worker"]
    assert bench_long.main(argv) == 0
    path = tmp_path / "long_cpu.jsonl"
    rows = rows_of(path)
    assert rows[0]["meta"]["layers"] == 2 and rows[0]["meta"]["model_layers"] == 3
    checks = [r for r in rows if r.get("check") == "first_token"]
    assert len(checks) == 2 and all(c["same_first_token"] for c in checks)
    cells = [r for r in rows if "method" in r and "check" not in r]
    assert [(r["length"], r["method"].split(":")[0], r["repeats"]) for r in cells] == [
        (256, "dense", 2), (256, "sample", 2), (512, "dense", 1), (512, "sample", 1)]
    assert all(r["status"] == "ok" and r["layers"] == 2 and r["ms_per_layer"] > 0 and r["commit"] for r in cells)
    assert all(0.15 < r["density"] < 0.25 for r in cells if r["method"].startswith("sample"))
    table = (tmp_path / "long_cpu.md").read_text()
    assert "2 of 3 layers" in table and "| 256 | sample:" in table and "Crashes: none; all 4 cells finished" in table

    assert bench_long.main(argv) == 0  # a second call resumes: every cell is already recorded
    again = rows_of(path)
    assert len(again) == len(rows) + 1 and "meta" in again[-1]

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{long_table.BEGIN}\nold\n{long_table.END}\nrest\n")
    long_table.write(path, readme)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "old" not in text
    assert "| method | 256 | 512 |" in text and "| dense:backend=flash |" in text


def test_the_stated_bound_at_one_million_tokens():
    config = bench_long.model_config("random:llama-3.1-8b", None)
    parts = long_prefill.held_bytes(config, 1 << 20)
    gib = {k: v / 2**30 for k, v in parts.items()}
    assert gib == {"hidden": 8.0, "qkv": 12.0, "attention_out": 8.0, "kept_kv": 0.0}
    whole_cache = long_prefill.held_bytes(config, 1 << 20, kept_kv_layers=32)["kept_kv"] / 2**30
    assert whole_cache == 128.0  # the figure: 32 layers x 8 kv heads x 128 x 1M, bf16
    # dense cuDNN / flash expand 8 kv heads to 32: k and v copies, 16 GiB at 1M; the fused sample path ~0.4 GiB
    assert bench_long.attention_workspace("dense:backend=cudnn", config, 1 << 20) == 16 * 2**30
    assert bench_long.attention_workspace("sample:density=0.05,r_w=0.00625", config, 1 << 20) == 12 * 32 * 2**20
    assert bench_long.attention_workspace("minference", config, 1 << 20) is None


BOOTSTRAP = f"""
import dataclasses, os, sys, time
import torch
sys.path.insert(0, "scripts")
from transformers import LlamaConfig
from attention.method import AttentionMethod, MethodConfig
from attention.reference import reference_attention
from attention.registry import register
import bench_long

@dataclasses.dataclass
class FailConfig(MethodConfig):
    at: int = 0
    how: str = "poison"

def poisoned(*args, **kwargs):
    raise RuntimeError("{ILLEGAL}")

@register
class Fail(AttentionMethod):
    name = "fail"
    Config = FailConfig

    def prefill(self, q, k, v, scale, layer_idx=0):
        if q.shape[2] == self.config.at:
            if self.config.how == "die":
                os._exit(9)
            if self.config.how == "hang":
                time.sleep(600)
            if self.config.how == "oom":  # recoverable: the worker goes on
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
            torch.nn.modules.module.register_module_forward_pre_hook(poisoned)  # every later forward fails
            poisoned()
        return reference_attention(q, k, v, scale=scale).to(q.dtype)

def tiny(name, layers):
    cfg = LlamaConfig(**{TINY!r})
    cfg.num_hidden_layers = min(layers or 3, 3)
    return cfg

bench_long.model_config = tiny
sys.exit(bench_long.main())
"""


def test_failed_cells_are_recorded_and_the_rest_still_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    methods = "dense:backend=flash,fail:at=512,how=oom,fail:at=512,fail:at=512,how=die,fail:at=512,how=hang"
    result = subprocess.run([sys.executable, "-c", BOOTSTRAP, "--device", "cpu", "--lengths", "256,512,768",
                             "--layers", "1", "--chunk", "128", "--repeats", "1", "--methods", methods,
                             "--warmup-length", "128", "--check-length", "0", "--cell-timeout", "20",
                             "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = rows_of(tmp_path / "long_cpu.jsonl")
    cells = {(r["length"], r["method"]): r for r in rows if "method" in r}
    assert len(cells) == 15
    poison, die, hang, oom = "fail:at=512", "fail:at=512,how=die", "fail:at=512,how=hang", "fail:at=512,how=oom"
    assert cells[(512, oom)]["status"] == "oom" and "out of memory" in cells[(512, oom)]["error"]
    assert cells[(512, poison)]["status"] == "error" and ILLEGAL in cells[(512, poison)]["error"]
    assert cells[(512, die)]["status"] == "error" and "worker died with status 9" in cells[(512, die)]["error"]
    assert cells[(512, hang)]["status"] == "timeout" and "--cell-timeout 20" in cells[(512, hang)]["error"]
    failed = {(512, poison), (512, die), (512, hang), (512, oom)}
    assert all(r["status"] == "ok" for key, r in cells.items() if key not in failed)  # after the poisoning too
    assert sum("meta" in r for r in rows) == 4  # the first worker and one fresh worker per failure
    table = (tmp_path / "long_cpu.md").read_text()
    assert "Crashes: 4 of 15 cells did not finish" in table and ILLEGAL in table


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "bench"
    assert bench_long.main(["--device", "cpu", "--lengths", "12q", "--out", str(out)]) == 2
    assert bench_long.main(["--device", "cpu", "--repeats", "1m=0", "--out", str(out)]) == 2
    assert bench_long.main(["--device", "cpu", "--methods", "nosuch", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert not out.exists()
    assert worker.RESTART_EXIT == 75


def test_the_default_table_methods_build_and_sample_windows_are_a_quarter_of_the_budget():
    import math

    from attention.density import base_cells

    methods = bench_long.build(bench_long.DEFAULT_METHODS)
    names = [m.name for m in methods]
    assert names == ["dense", "dense", "sample", "sample", "sample", "streaming", "bigbird", "h2o", "minference",
                     "flexprefill", "xattention"]
    assert [m.config.backend for m in methods[:2]] == ["cudnn", "flash"]
    assert sorted(m.config.density for m in methods if m.name == "sample") == [0.05, 0.1, 0.2]
    for method in (m for m in methods if m.name == "sample"):
        n = 1 << 20
        window = math.ceil(method.config.r_w * n)
        base, causal = base_cells(n, n, window, method.config.sink)
        assert abs(base / causal / method.config.density - 0.25) < 0.01
