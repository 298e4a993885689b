"""The one option grammar of the CLI, YAML sweeps, methods and tasks (a leaf module: stdlib only).

  spec         name[:key=value,key=value,...]        a method or a task with its options
  spec list    dense,sample:alpha=0.9,r_w=0.1,bigbird  key=value items belong to the name before them
  alternatives sample:alpha=0.8|0.9|0.95              one spec per value (per combination for several keys)
  lengths      1024,2k,8K,1m                          k = 1024, m = 1024^2
  quoting      needle:needle="one, two"               a quoted value keeps its commas (and | and =)

Every bad input raises InputError: one line that names the fix; the CLI prints it and exits with code 2.
"""
import dataclasses
import itertools
import re
import typing

PREFILL_CHUNK = 16384  # tokens per part of a chunked prefill (--prefill chunked): its one default

LENGTH = re.compile(r"^(\d+(?:\.\d+)?)([kKmM]?)$")
QUOTES = "\"'"


class InputError(ValueError):
    """Bad input found before any work: one line naming the fix, exit code 2."""


def split_outside_quotes(text: str, sep: str) -> list[str]:
    """Split on `sep` except inside '...' or "..."; quotes stay in the pieces."""
    parts, current, quote = [], [], None
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in QUOTES:
            quote = char
        elif char == sep:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quote:
        raise InputError(f"unbalanced {quote} in {text!r}; close the quote")
    parts.append("".join(current))
    return parts


def unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in QUOTES:
        return value[1:-1]
    return value


def _key_value(item: str, owner: str) -> tuple[str, str]:
    key, eq, value = item.partition("=")
    if not eq or not key.strip():
        raise InputError(f"{owner}: option {item.strip()!r} must be key=value")
    return key.strip(), value.strip()


def parse_spec(text: str) -> tuple[str, dict[str, str]]:
    """'needle:depths=5,needle="a, b"' -> ('needle', {'depths': '5', 'needle': '"a, b"'}); values keep their
    quotes so that alternatives() splits only unquoted '|' (option_value() strips them)."""
    name, _, rest = text.strip().partition(":")
    name = name.strip()
    if not name:
        raise InputError(f"{text!r} has no name; write name or name:key=value")
    options: dict[str, str] = {}
    for item in split_outside_quotes(rest, ","):
        if item.strip():
            key, value = _key_value(item, name)
            options[key] = value
    return name, options


def parse_specs(text: str, what: str = "method") -> list[tuple[str, dict[str, str]]]:
    """'dense,sample:alpha=0.9,r_row=0.05,bigbird' -> [(name, options)]; key=value items attach to the name
    before them."""
    specs: list[tuple[str, dict[str, str]]] = []
    for item in (part.strip() for part in split_outside_quotes(text, ",")):
        if not item:
            continue
        head, colon, rest = item.partition(":")
        if colon and "=" not in head:
            specs.append((head.strip(), {}))
            item = rest
        elif "=" not in item:
            specs.append((item, {}))
            continue
        if not specs:
            raise InputError(f"option {item!r} comes before any {what} name; write name:key=value")
        key, value = _key_value(item, specs[-1][0])
        specs[-1][1][key] = value
    if not specs:
        raise InputError(f"no {what} given; write e.g. dense,sample:alpha=0.9")
    return specs


def alternatives(options: dict[str, str]) -> list[dict[str, str]]:
    """{'alpha': '0.8|0.9', 'r_w': '0.1'} -> one option dict per combination of the '|' alternatives."""
    keys = list(options)
    choices = [[v.strip() for v in split_outside_quotes(options[k], "|")] for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*choices)]


def parse_lengths(text: str | int | list) -> list[int]:
    """'1024,2k,8K' (or a list of such items, or an int) -> token counts; every length must be >= 1."""
    items = text if isinstance(text, list) else str(text).split(",")
    lengths = []
    for item in (str(part).strip() for part in items):
        if not item:
            continue
        match = LENGTH.match(item)
        if not match:
            raise InputError(f"--lengths: {item!r} is not a length; write e.g. 1024,2048,8k,32k")
        value = float(match.group(1)) * {"": 1, "k": 1024, "m": 1024 ** 2}[match.group(2).lower()]
        if value != int(value):
            raise InputError(f"--lengths: {item!r} must be a whole number of tokens")
        if value < 1:
            raise InputError(f"--lengths: {item!r} must be at least 1 token")
        lengths.append(int(value))
    if not lengths:
        raise InputError("--lengths: give at least one length, e.g. 1024,2048")
    return lengths


def format_length(tokens: int) -> str:
    """8192 -> '8K', 1048576 -> '1M', 1000 -> '1000': how length axes and tables name lengths."""
    for unit, size in (("M", 1024 ** 2), ("K", 1024)):
        if tokens >= size and tokens % size == 0:
            return f"{tokens // size}{unit}"
    return str(tokens)


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def convert(text: str, kind, owner: str, key: str, error=InputError):
    """A string option value as `kind` (int, float, str, bool, a typing.Literal of allowed strings, or one of
    these | None)."""
    value = unquote(text)
    args = typing.get_args(kind)
    if type(None) in args:  # an optional option: 'none' is None, anything else the other type
        if value.lower() == "none":
            return None
        kind = next(a for a in args if a is not type(None))
    if typing.get_origin(kind) is typing.Literal:
        allowed = typing.get_args(kind)
        if value not in allowed:
            raise error(f"{owner}: {key}={value!r} is not one of: {', '.join(map(str, allowed))}")
        return value
    try:
        if kind is bool:
            if value.lower() not in _TRUE + _FALSE:
                raise ValueError
            return value.lower() in _TRUE
        if kind is int and not re.fullmatch(r"[+-]?\d+", value):
            raise ValueError
        return kind(value)
    except ValueError:
        raise error(f"{owner}: option {key}={value!r} is not a valid {kind.__name__}") from None


def build_config(config_cls, options: dict[str, str] | None, owner: str, error=InputError):
    """A validated dataclass config from string options; unknown keys and bad values are one-line InputErrors.
    The dataclass may define validate() raising InputError (or a subclass); its message gets the owner prefix."""
    hints = typing.get_type_hints(config_cls)
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    values = {}
    for key, text in (options or {}).items():
        if key not in fields:
            raise error(f"{owner}: unknown option {key!r}; valid options: {', '.join(fields) or 'none'}")
        values[key] = convert(text, hints.get(key, str), owner, key, error)
    config = config_cls(**values)
    validate = getattr(config, "validate", None)
    if validate is not None:
        try:
            validate()
        except InputError as err:
            message = str(err)
            raise type(err)(message if message.startswith(f"{owner}:") else f"{owner}: {message}") from None
    return config


def changed_options(config) -> str:
    """'alpha=0.8,r_w=0.1': the options that differ from their defaults, in field order."""
    parts = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if value != default:
            parts.append(f"{f.name}={quote_if_needed(value)}")
    return ",".join(parts)


def quote_if_needed(value) -> str:
    text = str(value)
    return f'"{text}"' if any(c in text for c in ",|:") else text


def check_range(name: str, value: float, low: float, high: float, low_open=False, high_open=False,
                error=InputError) -> None:
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise error(f"{name}={value} is out of range: it must be in {lo}{low}, {high}{hi}")
