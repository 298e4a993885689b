"""Built-in passkey retrieval: a number hidden in repetitive filler; the simplest long-context check."""
import dataclasses
import random

from tasks.base import Sample, Task, TaskError, register
from tasks.render import assemble, text_ids

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "


@dataclasses.dataclass
class PasskeyConfig:
    depth: float = 0.5  # where the key sits, 0 = start of the filler, 1 = end

    def validate(self):
        if not 0 <= self.depth <= 1:
            raise TaskError(f"passkey: depth={self.depth} must be in [0, 1]")


@register
class Passkey(Task):
    name = "passkey"
    Config = PasskeyConfig
    description = "find a 5-digit pass key hidden at a given depth in repetitive filler (built in, offline)"

    @property
    def depth(self) -> float:
        return self.config.depth

    def samples(self, tokenizer, lengths, n=1, seed=0):
        filler_ids = text_ids(tokenizer, FILLER * (max(lengths) // 16 + 10))
        for length in lengths:
            for i in range(n):
                key = str(random.Random(f"{seed}-{length}-{i}").randint(10000, 99999))
                ids = assemble(tokenizer, length,
                               head="There is a pass key hidden in the text below. Find it and remember it.\n\n",
                               filler_ids=filler_ids,
                               inserts=[(self.depth, f" The pass key is {key}. Remember it. {key} is the pass key. ")],
                               tail="\n\nWhat is the pass key? Answer with the number only.")
                yield Sample(id=f"passkey-{length}-{i}", task=self.name, length=length, input_ids=ids,
                             answer=key, max_new_tokens=12, meta={"depth": self.depth})

    def score(self, sample, prediction):
        return {"score": float(sample.answer in prediction)}
