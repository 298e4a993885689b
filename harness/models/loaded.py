"""What every model loader returns (LoadedModel), the one-line error they raise, and the dtype they default to."""
import dataclasses

import torch

from harness.options import InputError


class ModelError(InputError):
    """A model that cannot be found or loaded; the message is one line saying how to get it."""


@dataclasses.dataclass
class LoadedModel:
    name: str
    model: object
    tokenizer: object
    source: str           # the file or folder loaded
    dtype: str
    max_context: int | None
    timing_only: bool = False  # random weights: answers mean nothing, so cells are timed and never scored

    def __post_init__(self):
        # the harness's name travels with the model: attention.hf.install looks up the model's density profile
        config = getattr(self.model, "config", None)
        if config is not None:
            config.sampleattn_model = self.name


def default_dtype(device: str) -> torch.dtype:
    return torch.bfloat16 if device.startswith("cuda") else torch.float32
