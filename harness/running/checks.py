"""The checks of a grid that need no torch: method and task names, and lengths whose prompt cannot fit in this
machine's memory. The CLI runs them before it imports the work (a tenth of a second, not seconds); validate runs
them again for grids that do not come through the CLI."""
import os
import sys

from attention.methods import BUILTIN_NAMES as METHOD_NAMES
from harness.options import InputError, parse_spec, parse_specs
from tasks.base import TASKS

PROMPT_BYTES_PER_TOKEN = 44  # at least: a Python list of token ids (8 B pointer + 28 B int) and its int64 tensor


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_lengths_fit(lengths: list[int]) -> None:
    """A length whose prompt alone cannot be held in this machine's memory is refused before anything is built
    (--beyond-context lets any length through the model's context check, not through this one)."""
    memory = physical_memory()
    if not memory:
        return
    too_big = [n for n in lengths if n * PROMPT_BYTES_PER_TOKEN > memory]
    if too_big:
        n = too_big[0]
        need = n * PROMPT_BYTES_PER_TOKEN / 2**30
        raise InputError(f"--lengths {n}: a prompt of {n:,} tokens needs at least {need:.0f} "
                         f"GiB just for its token ids, more than this machine's {memory / 2**30:.0f} GiB; pass "
                         "shorter lengths")


def check_names(methods: list[str], tasks: list[str]) -> None:
    """Unknown method and task names (of method and task specs), refused before anything imports torch (a tenth
    of a second, not seconds). A method registered by a plugin already imported is known too."""
    registry = sys.modules.get("attention.registry")  # imported only if a plugin has registered a method
    plugins = set(registry.METHODS._entries) if registry else set()
    for text in methods:
        for name, _ in parse_specs(text):
            if name not in METHOD_NAMES and name not in plugins:
                known = ", ".join(sorted({*METHOD_NAMES, *plugins}))
                raise InputError(f"unknown method {name!r}; choose from: {known}")
    for text in tasks:
        TASKS.get(parse_spec(text)[0])  # task modules import no torch
