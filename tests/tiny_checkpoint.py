"""A tiny random Llama (tests/tiny_models.py) saved as a model folder with a character-level tokenizer, so that
the command line (and torchrun ranks) can load it by path like any local model."""
import string
from pathlib import Path

from tiny_models import tiny_model


def char_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(string.printable) - set("\x0b\x0c\r"))
    vocab = {"<unk>": 0, "</s>": 1, **{c: i + 2 for i, c in enumerate(chars)}}  # 99 ids < the model's 128
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")


def save_tiny_checkpoint(folder, family: str = "llama") -> Path:
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        tiny_model(family).save_pretrained(folder)
        char_tokenizer().save_pretrained(folder)
    return folder
