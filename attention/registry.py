"""The method registry: names -> method classes, and building a method from its name and string options.

Built-in methods are the modules listed in attention.methods.BUILTINS, imported on first lookup.
"""
from attention.method import AttentionMethod, ConfigError  # noqa: F401  (ConfigError: callers catch it here)
from attention.methods import BUILTINS
from harness.options import build_config
from harness.registry import Registry

METHODS: Registry[AttentionMethod] = Registry("method", BUILTINS, error=ConfigError)
register = METHODS.register


def build_method(name: str, options: dict[str, str] | None = None) -> AttentionMethod:
    """Build a method from its name and string options (as given on the command line)."""
    cls = METHODS.get(name)
    return cls(build_config(cls.Config, options, name, ConfigError))


def available_methods() -> dict[str, type[AttentionMethod]]:
    return METHODS.all()
