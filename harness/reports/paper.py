"""The paper tables `reproduce` compares with: which sweep stands behind each, and where its numbers are (CSV
files shipped as package data, so any install finds them, not only an editable checkout)."""
from pathlib import Path

PAPER = Path(__file__).resolve().parent / "paper_tables"

# table -> the sweep behind it (methods, tasks, default lengths) and the paper CSV it is compared with;
# tasks None: any task (TTFT does not depend on what the prompt says)
TABLES = {
    "accuracy": {"methods": ["dense", "sample:alpha=0.95", "bigbird", "streaming"],
                 "tasks": ["babilong", "longbench"], "lengths": [2048, 4096], "paper": "accuracy_v2.csv"},
    "needle": {"methods": ["dense", "sample:alpha=0.95", "bigbird", "streaming"], "tasks": ["needle"],
               "lengths": [1024, 2048, 4096, 8192], "paper": None},
    "ttft": {"methods": ["dense", "sample:alpha=0.95", "sample:alpha=0.8", "sample:pattern=column_slash"],
             "tasks": None, "lengths": [8192, 16384, 32768], "paper": "ttft_speedup.csv"},
}
PAPER_NAMES = {"full": "dense"}  # the paper's name for dense attention
