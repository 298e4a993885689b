"""A CUDA error poisons its process: once a kernel faults, every later launch in that process fails too, so
one bad cell would turn the rest of a sweep into errors. The driver records the failed cell with its message
(as for any error), then `restart` replaces the process with a fresh one that resumes the run folder
(os.execv of the same command with --resume RUN_DIR). The fresh process skips the cells that poisoned an
earlier process of the chain (`poisoned_keys`) and runs the rest. An out-of-memory error does not poison the
process: it stays an ordinary recorded error.

A plain `--resume` by hand (no restart chain) retries those cells, as it retries every error.
"""
import os
import sys

RESTART_EXIT = 75                     # a worker's exit status for "poisoned: start a fresh one" (EX_TEMPFAIL)
RESTARTS_ENV = "SAMPLEATTN_RESTARTS"  # how many times this command has restarted itself
MAX_RESTARTS = 100                    # each restart follows a newly recorded cell, so this only bounds a bug
STICKY = ("CUDA error", "illegal memory access", "device-side assert", "unspecified launch failure",
          "misaligned address", "illegal instruction", "CUBLAS_STATUS_EXECUTION_FAILED",
          "CUDNN_STATUS_EXECUTION_FAILED", "uncorrectable ECC error", "Triton Error [CUDA]")


def is_sticky(message: str | None) -> bool:
    """True for an error message that leaves the CUDA context unusable (out-of-memory does not)."""
    text = message or ""
    return any(marker in text for marker in STICKY) and "out of memory" not in text


def restarts() -> int:
    return int(os.environ.get(RESTARTS_ENV, "0") or 0)


def command_prefix(argv: list[str] | None = None, orig_argv: list[str] | None = None) -> list[str]:
    """How this process was started, up to its own arguments: python [flags] (-m module | -c code | script)."""
    argv = list(sys.argv if argv is None else argv)
    orig = list(getattr(sys, "orig_argv", [sys.executable, *argv]) if orig_argv is None else orig_argv)
    return orig[:len(orig) - len(argv) + 1]


def resume_argv(folder: str, argv: list[str] | None = None, orig_argv: list[str] | None = None) -> list[str]:
    """The command that started this process (interpreter flags, -m / -c / script kept), with --resume RUN_DIR
    in place of any --resume it had."""
    argv = list(sys.argv if argv is None else argv)
    prefix = command_prefix(argv, orig_argv)
    rest, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
        elif arg == "--resume":
            skip = True
        elif not arg.startswith("--resume="):
            rest.append(arg)
    return [*prefix, *rest, "--resume", str(folder)]


def restart(store, message: str) -> None:
    """Replace this (poisoned) process by a fresh run of the same command resuming the store's run folder (its
    lock handed over: released here, taken again by the fresh process); never returns."""
    folder = store.folder
    count = restarts() + 1
    if count > MAX_RESTARTS:
        raise SystemExit(f"error: {count - 1} restarts after CUDA errors; stopping (resume with --resume {folder})")
    argv = resume_argv(str(folder))
    print(f"note: a CUDA error poisoned this process ({message}); the cell is recorded, restarting "
          f"({count}) to resume {folder}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.environ[RESTARTS_ENV] = str(count)
    if hasattr(store, "release"):
        store.release()
    os.execv(sys.executable, argv)


def poisoned_keys(cells: list[dict]) -> set:
    """In a restarted process: cells whose latest record is a process-poisoning error (not retried here)."""
    if not restarts():
        return set()
    latest = {c.get("key"): c for c in cells}
    return {key for key, c in latest.items() if c.get("status") == "error" and is_sticky(c.get("error"))}
