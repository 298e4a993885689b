"""The `sampleattn` command line: run, sweep, methods, tasks, report, reproduce, diagnose, calibrate.

One module per subcommand (`harness/cli/<subcommand>.py`): its flags (`add_parser`) and what it does
(`main(args, argv)`, which turns the flags into Settings once and hands those on). Each imports the work behind it
only when it runs, so `--help` and bad flags answer before torch loads.
"""
import os
import sys

from harness.models import hub
from harness.cli import calibrate, diagnose, methods, report, reproduce, run, sweep, tasks
from harness.cli.flags import OUT, Parser  # noqa: F401  (OUT: the default --out)
from harness.options import InputError, parse_lengths  # noqa: F401  (parse_lengths: the CLI's length grammar)
from harness.running.checks import check_names

COMMANDS = {module.NAME: module for module in (run, sweep, methods, tasks, report, reproduce, diagnose, calibrate)}


def build_parser() -> Parser:
    parser = Parser(prog="sampleattn", description="Accuracy vs time-to-first-token of sparse prefill attention "
                    "methods (SampleAttention, MInference, FlexPrefill, XAttention, BigBird, StreamingLLM, H2O) against "
                    "dense attention (cuDNN, FlashAttention).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv=None) -> int:
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = build_parser().parse_args(argv)
        # before anything imports huggingface_hub (it reads these once): no network unless --download
        if getattr(args, "download", False):
            reason = hub.unreachable_reason()
            if reason is not None:
                raise InputError(f"--download: the Hugging Face hub ({hub.endpoint()}) could not be reached "
                                 f"({reason}); check the network (or HF_ENDPOINT, HTTPS_PROXY), or drop --download "
                                 "to use the local cache")
        offline = "0" if getattr(args, "download", False) else "1"
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ[name] = offline
        task = getattr(args, "task", None)  # names first: before the subcommand imports torch
        check_names([args.methods] if getattr(args, "methods", None) else [],
                    [task] if isinstance(task, str) else list(task or []))
        code = COMMANDS[args.command].main(args, argv)
        sys.stdout.flush()  # inside the try: a reader that has gone (`| head`) is met here
        return code
    except BrokenPipeError:  # the reader stopped reading (`sampleattn methods | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 0
    except KeyboardInterrupt as err:  # the driver names the run folder (harness.running.driver.Interrupted)
        print(getattr(err, "message", "interrupted"), file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001  bad input is one line and exit 2; anything else is a bug
        if not isinstance(err, InputError):  # methods' ConfigError and tasks' TaskError are InputErrors too
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
