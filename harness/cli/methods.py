"""`sampleattn methods`: every attention method with its options, their defaults and the comment beside each."""
import dataclasses
import inspect
import re

NAME = "methods"


def add_parser(sub) -> None:
    sub.add_parser(NAME, help="list attention methods with their options and defaults")


def option_comments(config_cls) -> dict[str, str]:
    """The comment after each field in the config's source (`alpha: float = 0.95  # CRA threshold`), with the
    comment-only lines that continue it."""
    try:
        lines = inspect.getsource(config_cls).splitlines()
    except (OSError, TypeError):
        return {}
    comments, current = {}, None
    for line in lines:
        field = re.match(r"^\s+(\w+)\s*:[^=]*=[^#]*#\s*(.+)$", line)
        more = re.match(r"^\s+#\s*(.+)$", line)
        if field:
            current = field.group(1)
            comments[current] = field.group(2).strip()
        elif more and current:
            comments[current] += " " + more.group(1).strip()
        else:
            current = None
    return comments


def main(args, argv: list[str]) -> int:
    from attention.registry import available_methods  # imported when it runs: torch takes seconds

    for name, cls in sorted(available_methods().items()):
        print(f"{name}: {cls.description}")
        comments = option_comments(cls.Config)
        for field in dataclasses.fields(cls.Config):
            default = field.default if field.default is not dataclasses.MISSING else "(required)"
            kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
            note = f"  -- {comments[field.name]}" if field.name in comments else ""
            print(f"    {field.name} ({kind}) = {default}{note}")
    return 0
