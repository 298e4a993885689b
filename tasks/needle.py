"""Needle in a haystack (Kamradt): one fact hidden at a grid of depths in Paul Graham essays, asked back.

A sample per (length, depth, i); meta carries the depth so results pivot into the usual heatmap.
"""
import dataclasses
import random
import string

from tasks.base import Sample, Task, TaskError, register
from tasks.haystack import haystack
from tasks.render import assemble_at

# The original test's needle and question (needlehaystack 0.1.0 defaults).
NEEDLE = "\nThe best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.\n"
QUESTION = "What is the best thing to do in San Francisco?"
ANSWER = "eat a sandwich and sit in Dolores Park on a sunny day"
HEAD = "Read the document below and answer the question after it. Keep your answer short and direct.\n\n<document>\n"
TAIL = "\n</document>\n\n{question} Don't give information outside the document or repeat your findings."
STOPWORDS = {"a", "an", "the", "and", "or", "of", "in", "on", "at", "to", "is", "are", "was", "for", "with", "by"}


def normalize(text: str) -> str:
    text = text.lower().translate(str.maketrans(string.punctuation, " " * len(string.punctuation)))
    return " ".join(text.split())


def keywords(text: str) -> list[str]:
    return [w for w in normalize(text).split() if w not in STOPWORDS] or normalize(text).split()


def parse_depths(value: str) -> list[float]:
    """'10' -> 10 evenly spaced percents 0..100; '0+25+50' -> those percents."""
    try:
        if "+" not in value and "." not in value:
            count = int(value)
            if count < 1:
                raise ValueError
            return [0.0] if count == 1 else [round(100 * k / (count - 1)) for k in range(count)]
        depths = [float(v) for v in value.split("+")]
    except ValueError:
        raise TaskError(f"needle: depths={value!r} must be a count (10) or percents joined by '+' (0+50+100)") from None
    if not all(0 <= d <= 100 for d in depths):
        raise TaskError(f"needle: depths={value!r} must lie in 0..100 (percent)")
    return depths


@dataclasses.dataclass
class NeedleConfig:
    depths: str = "10"          # a count of evenly spaced depths, or percents joined by '+' (0+50+100)
    needle: str = NEEDLE
    question: str = QUESTION
    answer: str = ""            # needed with a custom needle: the words the model should give back
    haystack: str = ""          # a folder of .txt files instead of the Paul Graham essays
    max_new_tokens: int = 48

    def validate(self):
        if self.needle != NEEDLE and not self.answer:
            raise TaskError("needle: a custom needle needs answer=... (the words the model should give back)")
        if self.max_new_tokens < 1:
            raise TaskError(f"needle: max_new_tokens={self.max_new_tokens} must be a whole number >= 1")
        parse_depths(self.depths)


@register
class Needle(Task):
    name = "needle"
    Config = NeedleConfig
    description = ("needle in a haystack: a fact hidden in Paul Graham essays at a grid of depths "
                   "(options: depths=10|0+50+100, needle=, question=, answer=, haystack=/dir, max_new_tokens=)")

    def __init__(self, config=None):
        super().__init__(config)
        cfg = self.config
        self.depths = parse_depths(cfg.depths)
        self.needle, self.question = cfg.needle, cfg.question
        self.answer = cfg.answer or ANSWER
        self.folder = cfg.haystack or None
        self.max_new_tokens = cfg.max_new_tokens

    def count(self, n):
        return n * len(self.depths)

    def samples(self, tokenizer, lengths, n=1, seed=0):
        hay = haystack(tokenizer, self.folder)
        for length in lengths:
            for depth in self.depths:
                for i in range(n):
                    # Sample i starts at a seeded essay, the same for every depth, so a row of the heatmap
                    # differs only in where the needle sits.
                    essay = random.Random(f"needle-{seed}-{length}-{i}").randrange(len(hay.starts))
                    filler, breaks = hay.window(hay.starts[essay], length)
                    try:
                        ids, (pos,) = assemble_at(tokenizer, length, HEAD, filler, [(depth / 100, self.needle)],
                                                  TAIL.format(question=self.question), breaks)
                    except ValueError as err:
                        raise TaskError(f"needle: length {length}: {err}") from None
                    yield Sample(id=f"needle-{length}-d{depth:g}-{i}", task=self.name, length=length,
                                 input_ids=ids, answer=self.answer, max_new_tokens=self.max_new_tokens,
                                 meta={"depth": depth, "needle_token": pos, "essay": essay})

    def score(self, sample, prediction):
        said = normalize(prediction)
        words = set(said.split())
        wanted = keywords(sample.answer)
        exact = float(f" {normalize(sample.answer)} " in f" {said} ")
        partial = sum(w in words for w in wanted) / len(wanted)
        return {"score": partial, "exact": exact, "partial": partial}
