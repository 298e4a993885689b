"""`sampleattn tasks`: every task with its description."""
from tasks.base import available_tasks

NAME = "tasks"


def add_parser(sub) -> None:
    sub.add_parser(NAME, help="list tasks")


def main(args, argv: list[str]) -> int:
    for name, cls in sorted(available_tasks().items()):
        print(f"{name}: {cls.description}")
    return 0
