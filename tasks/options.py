"""Parsing of task option values (they arrive as strings from 'name:key=value' specs)."""
from tasks.base import TaskError


def whole_number(task: str, key: str, value: str, minimum: int = 1) -> int:
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise TaskError(f"{task}: {key}={value!r} must be a whole number >= {minimum}")
    return number


def flag(task: str, key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("0", "1", "true", "false", "yes", "no"):
        raise TaskError(f"{task}: {key}={value!r} must be 1 or 0")
    return lowered in ("1", "true", "yes")
