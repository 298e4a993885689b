"""RULER's four generator families (niah, variable tracking, common/frequent words, QA), rewritten to be seeded.

Follows the official generators in `nvidia-long-context-eval` (long_context_eval/data/synthetic/*.py: read, not
imported, since they parse arguments at import time). Two changes make prompts token-exact and comparable across
lengths: each sample's content (keys, values, query, chain, common words, question) is drawn once from the
sample's seed, independent of the haystack size `n`; and positions are drawn as fractions of the haystack, so a
needle sits at the same relative depth at every length. Everything that depends on `n` is seeded by (seed, n).

A family draws a sample with `spec(rng, length, index, count)` and renders it for haystack size `n` with
`render(spec, n) -> Draft`; tasks/ruler.py searches the largest `n` that fits and fills the last few tokens with
the token prefix of `Draft.pad` (more of the same haystack), as our other tasks cut their filler.
"""
import dataclasses
import random
import re
import string
import uuid

from tasks.ruler_data import essay_words, qa_dataset, word_list

REPEAT = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
VT_NOISE = REPEAT + "\n"
DOCUMENT = "Document {i}:\n{document}"
DEPTHS = [round(100 * k / 39) for k in range(40)]  # np.round(np.linspace(0, 100, 40)) in niah.py
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"'])\s+")


@dataclasses.dataclass
class Draft:
    head: str            # user message up to the end of the context
    tail: str            # user message after the context (the question)
    answer_prefix: str   # starts the assistant's turn, as RULER appends it after the model template
    pad: str             # more haystack: its token prefix fills the gap between head and tail
    answers: list[str]
    meta: dict


def split_template(template: str) -> tuple[str, str]:
    head, tail = template.split("{context}")
    return head, tail


def sentences(text: str) -> list[str]:
    """Sentence split after . ! ? (RULER uses nltk's punkt, whose data is a separate download)."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def random_value(rng: random.Random, kind: str) -> str:
    if kind == "numbers":
        return str(rng.randint(10**6, 10**7 - 1))
    if kind == "words":  # RULER: a random 'adjective-noun' from wonderwords' lists
        return f"{rng.choice(word_list('adjective'))}-{rng.choice(word_list('noun'))}"
    if kind == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise ValueError(kind)


def insert_at(units: list[str], fractions: list[float], items: list[str]) -> list[str]:
    """Insert items among units at sorted relative positions (one unit index per fraction)."""
    out = list(units)
    for frac, item in sorted(zip(fractions, items), reverse=True):
        out.insert(min(len(units), int(frac * len(units))), item)
    return out


class Niah:
    family = "niah"

    def __init__(self, type_haystack, type_needle_k, type_needle_v, num_needle_k, num_needle_v, num_needle_q):
        self.haystack, self.kind_k, self.kind_v = type_haystack, type_needle_k, type_needle_v
        self.num_k, self.num_v, self.num_q = max(num_needle_k, num_needle_q), num_needle_v, num_needle_q

    def min_units(self, spec):
        return 1

    def max_units(self):
        return len(essay_words()) if self.haystack == "essay" else 10**7

    def spec(self, rng, length, index, count):
        keys, values, needles = [], [], []
        for _ in range(self.num_k):
            keys.append(random_value(rng, self.kind_k))
            values.append([random_value(rng, self.kind_v) for _ in range(self.num_v)])
            needles += [NEEDLE.format(type_needle_v=self.kind_v, key=keys[-1], value=v) for v in values[-1]]
        rng.shuffle(needles)
        if self.haystack == "essay":
            where = [d / 100 for d in rng.sample(DEPTHS, len(needles))]
        else:
            where = [rng.random() for _ in needles]
        asked = rng.sample(range(self.num_k), self.num_q)
        queries = [keys[i] for i in asked]
        query = ", ".join(queries[:-1]) + ", and " + queries[-1] if len(queries) > 1 else queries[0]
        return {"needles": needles, "where": where, "query": query, "answers": [v for i in asked for v in values[i]],
                "seed": rng.getrandbits(64)}

    def _distractors(self, seed, start, count):
        rng = random.Random(seed)
        out = [NEEDLE.format(type_needle_v=self.kind_v, key=random_value(rng, self.kind_k),
                             value=random_value(rng, self.kind_v)) for _ in range(start + count)]
        return out[start:]

    def render(self, spec, n):
        template, answer_prefix = self.template, self.answer_prefix
        needles, where = spec["needles"], spec["where"]
        if self.haystack == "essay":
            words = essay_words()
            sents = sentences(" ".join(words[:n]))
            cuts = [0] + sorted(int(len(sents) * w) for w in where) + [len(sents)]
            parts = []
            for i in range(1, len(cuts)):
                parts.append(" ".join(sents[cuts[i - 1]:cuts[i]]))
                if i - 1 < len(needles):
                    parts.append(needles[i - 1])
            context, pad = " ".join(parts), " " + " ".join(words[n:n + 400])
        else:
            units = [REPEAT] * n if self.haystack == "repeat" else self._distractors(spec["seed"], 0, n)
            more = [REPEAT] * 6 if self.haystack == "repeat" else self._distractors(spec["seed"], n, 6)
            context, pad = "\n".join(insert_at(units, where, needles)), "\n" + "\n".join(more)
        kind = self.kind_v
        if self.num_q * self.num_v == 1:  # RULER's singular wording for one expected value
            template, answer_prefix = (_singular(t) for t in (template, answer_prefix))
            kind = kind[:-1]
        head, tail = split_template(template)
        fill = {"type_needle_v": kind, "query": spec["query"]}
        return Draft(head.format(**fill) + context, tail.format(**fill), answer_prefix.format(**fill), pad,
                     spec["answers"], {"query": spec["query"], "needles": len(needles)})


def _singular(text: str) -> str:
    for old, new in (("Some", "A"), ("are all", "is"), ("are", "is"), ("answers", "answer")):
        text = text.replace(old, new)
    return text


class VariableTracking:
    family = "variable_tracking"

    def __init__(self, num_chains, num_hops):
        self.chains, self.hops = num_chains, num_hops

    def min_units(self, spec):
        return self.hops + 1

    def max_units(self):
        return 10**7

    def _chains(self, rng, letters, hops):
        names = set()
        while len(names) < self.chains * (hops + 1):
            names.add("".join(rng.choices(string.ascii_uppercase, k=letters)))
        names = sorted(names)
        rng.shuffle(names)
        chains, variables = [], []
        for c in range(self.chains):
            own = names[c * (hops + 1):(c + 1) * (hops + 1)]
            variables.append(own)
            chains.append([f"VAR {own[0]} = {rng.randint(10000, 99998)}"] +
                          [f"VAR {own[j + 1]} = VAR {own[j]} " for j in range(hops)])
        return variables, chains

    def _text(self, chains, where, noises):
        units = [VT_NOISE] * noises
        for chain, fractions in zip(chains, where):
            positions = sorted(min(noises, int(f * noises)) for f in fractions)
            for j, (pos, item) in enumerate(zip(positions, chain)):
                units.insert(pos + j, item)
        value = chains[0][0].split("=")[-1].strip()
        head, tail = split_template(self.template)
        fill = {"query": value, "num_v": self.hops + 1}
        context = " ".join(units).replace(". \n", ".\n")
        return head.format(**fill) + context, tail.format(**fill), self.answer_prefix.format(**fill)

    def spec(self, rng, length, index, count):
        # The one-shot example (variable_tracking.py): 3-letter names, sized to 500 tokens, its names then
        # replaced by fresh random ones.
        icl_vars, icl_chains = self._chains(rng, 3, min(10, self.hops))
        icl_where = [[rng.random() for _ in chain] for chain in icl_chains]
        noises, example = 5, None
        while True:
            head, tail, prefix = self._text(icl_chains, icl_where, noises)
            text = head + tail + prefix + " " + " ".join(icl_vars[0]) + "\n\n"
            if count(text) + 30 > 500 or noises > 200:
                break
            example, noises = text, noises + 5
        example = example or text
        for name in icl_vars[0]:
            example = example.replace(name, "".join(rng.choices(string.ascii_uppercase, k=len(name))))
        variables, chains = self._chains(rng, 5, self.hops)
        return {"example": example, "chains": chains, "answers": variables[0],
                "where": [[rng.random() for _ in chain] for chain in chains]}

    def render(self, spec, n):
        head, tail, prefix = self._text(spec["chains"], spec["where"], n)
        return Draft(" " + spec["example"] + "\n\n" + head, tail, prefix, " " + " ".join([VT_NOISE] * 6),
                     spec["answers"], {"query": spec["chains"][0][0].split("=")[-1].strip()})


class CommonWords:
    family = "common_words_extraction"

    def __init__(self, freq_cw, freq_ucw, num_cw):
        self.freq_cw, self.freq_ucw, self.num_cw = freq_cw, freq_ucw, num_cw

    @staticmethod
    def vocabulary():
        return sorted(set(word_list("noun") + word_list("adjective") + word_list("verb")))

    def min_units(self, spec):
        return self.num_cw

    def max_units(self):
        return len(self.vocabulary())

    def repeats(self, length):
        # common_words_extraction.py: short contexts (< 4096) use fewer repeats, and so does the example
        if length < 4096:
            return (3, 1, 20), (6, 1)
        return (10, 3, 40), (self.freq_cw, self.freq_ucw)

    @staticmethod
    def numbered(words, start=0):
        return " ".join(f"{start + i + 1}. {w}" for i, w in enumerate(words))

    def spec(self, rng, length, index, count):
        (ex_common, ex_uncommon, ex_words), repeats = self.repeats(length)
        order = self.vocabulary()
        rng.shuffle(order)
        example = order[-ex_words:]  # from the end, so the answer (the first words) is the same at every length
        ex_list = example[:self.num_cw] * ex_common + example[self.num_cw:] * ex_uncommon
        rng.shuffle(ex_list)
        return {"example": ex_list, "example_answer": example[:self.num_cw], "order": order[:-ex_words],
                "repeats": repeats, "seed": rng.getrandbits(64)}

    def render(self, spec, n):
        template, answer_prefix = self.template, self.answer_prefix
        order, (common_rep, uncommon_rep) = spec["order"], spec["repeats"]
        common, uncommon = order[:self.num_cw], order[self.num_cw:n]
        items = common * common_rep + uncommon * uncommon_rep
        random.Random(f"{spec['seed']}-{n}").shuffle(items)
        head, tail = split_template(template)
        example = (head + self.numbered(spec["example"]) + tail + answer_prefix + self.numbered(spec["example_answer"]))
        pad = " " + self.numbered(order[n:n + 40], start=len(items))  # more words, once each: the top 10 stays
        return Draft(example + "\n" + head + self.numbered(items), tail, answer_prefix, pad, common,
                     {"distinct_words": n})


def zeta(alpha: float, terms: int = 1000) -> float:
    """Riemann zeta for alpha > 1 (Euler-Maclaurin tail), as scipy.special.zeta in freq_words_extraction.py."""
    head = sum(k ** -alpha for k in range(1, terms))
    return head + terms ** (1 - alpha) / (alpha - 1) + terms ** -alpha / 2 + alpha * terms ** (-alpha - 1) / 12


class FrequentWords:
    family = "freq_words_extraction"
    wordlen = 6

    def __init__(self, alpha):
        self.alpha = alpha

    def min_units(self, spec):
        return 10

    def max_units(self):
        return 10**8

    def spec(self, rng, length, index, count):
        size = max(4, length // 50)  # vocab_size = max_seq_length // 50
        # distinct random words in the order drawn (RULER sorts, then shuffles): a longer vocabulary extends a
        # shorter one, so the ranks, and the answer, are the same at every length
        vocab, seen = ["..."], set()  # the most frequent 'word' is noise
        while len(vocab) < size:
            word = "".join(rng.choices(string.ascii_lowercase, k=self.wordlen))
            if word not in seen:
                seen.add(word)
                vocab.append(word)
        return {"vocab": vocab, "seed": rng.getrandbits(64)}

    def render(self, spec, n):
        template, answer_prefix = self.template, self.answer_prefix
        vocab, z = spec["vocab"], zeta(self.alpha)
        words = [w for k, w in enumerate(vocab, 1) for _ in range(int(n * k ** -self.alpha / z))]
        random.Random(f"{spec['seed']}-{n}").shuffle(words)
        head, tail = split_template(template)
        return Draft(head + " ".join(words), tail, answer_prefix, " ..." * 300, vocab[1:4], {"words": n})


class QA:
    family = "qa"

    def __init__(self, dataset):
        self.dataset = dataset

    def min_units(self, spec):
        return spec["needed"]

    def max_units(self):
        return len(qa_dataset(self.dataset)[1])

    def spec(self, rng, length, index, count):
        questions, docs = qa_dataset(self.dataset)
        q = questions[index % len(questions)]  # qa.py: sample i asks question i
        gold = q["support"] + [d for d in q["context"] if d not in q["support"]]
        more = list(q["more"])
        rng.shuffle(more)
        taken = set(gold) | set(more)
        others = [d for d in rng.sample(range(len(docs)), min(len(docs), length // 20 + 200)) if d not in taken]
        return {"query": q["query"], "answers": q["outputs"], "order": gold + more + others,
                "needed": len(q["support"]), "seed": rng.getrandbits(64)}

    def render(self, spec, n):
        template, answer_prefix = self.template, self.answer_prefix
        docs = qa_dataset(self.dataset)[1]
        chosen = [docs[i] for i in spec["order"][:n]]
        random.Random(f"{spec['seed']}-{n}").shuffle(chosen)
        context = "\n\n".join(DOCUMENT.format(i=i + 1, document=d) for i, d in enumerate(chosen))
        pad = "\n\n" + "\n\n".join(DOCUMENT.format(i=n + 1 + i, document=docs[d])
                                   for i, d in enumerate(spec["order"][n:n + 3]))
        head, tail = split_template(template)
        return Draft(head + context, tail.format(query=spec["query"]), answer_prefix, pad, spec["answers"],
                     {"query": spec["query"], "documents": n})


FAMILIES = {"niah": Niah, "variable_tracking": VariableTracking, "common_words_extraction": CommonWords,
            "freq_words_extraction": FrequentWords, "qa": QA}


def make_family(task: str, args: dict, template: str, answer_prefix: str):
    """A generator for one RULER subtask: its family (synthetic.yaml's `task`), args and official template."""
    family = FAMILIES[task](**args)
    family.template, family.answer_prefix = template, answer_prefix
    return family
