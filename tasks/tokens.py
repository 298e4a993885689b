"""Timing only: random token ids of exactly the requested length; no answer, no score (cells are timing_only)."""
import random

from tasks.base import Sample, Task, register


@register
class Tokens(Task):
    name = "tokens"
    description = "random token ids of the exact length, timing only (TTFT, memory); runs on random: models"
    timing_only = True

    def samples(self, tokenizer, lengths, n=1, seed=0):
        vocab = len(tokenizer)
        for length in lengths:
            for index in range(n):
                rng = random.Random(f"{seed}-{length}-{index}")
                ids = [rng.randrange(vocab) for _ in range(length)]
                yield Sample(id=f"tokens-{length}-{index}", task=self.name, length=length, input_ids=ids, answer="",
                             max_new_tokens=1)

    def score(self, sample, prediction):
        return {}
