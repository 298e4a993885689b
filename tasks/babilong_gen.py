"""Seeded bAbI-style stories for BABILong qa1-qa5 (offline stand-in for the official data).

Each generator returns (facts, question, answer) with an answer from the official label set of its task,
and the question chosen so that exactly one answer is right. Vocabulary follows bAbI (Weston et al. 2015).
"""
import random

PEOPLE = ["Mary", "John", "Daniel", "Sandra"]
PLACES = ["bathroom", "bedroom", "garden", "hallway", "kitchen", "office"]
OBJECTS = ["apple", "football", "milk"]
GIVERS = ["Bill", "Fred", "Jeff", "Mary"]
MOVE = ["moved to", "went to", "journeyed to", "travelled to", "went back to"]
GET = ["got", "took", "picked up", "grabbed"]
DROP = ["dropped", "discarded", "put down", "left"]
GIVE = ["gave", "handed", "passed"]
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}


def _move(rng, who, where):
    return f"{who} {rng.choice(MOVE)} the {where}."


def qa1(rng: random.Random):
    """Single supporting fact: where is a person now."""
    people = rng.sample(PEOPLE, rng.randint(2, 4))
    at, facts = {}, []
    for _ in range(rng.randint(5, 10)):
        who = rng.choice(people)
        where = rng.choice([p for p in PLACES if p != at.get(who)])
        at[who] = where
        facts.append(_move(rng, who, where))
    who = rng.choice(sorted(at))
    return facts, f"Where is {who}?", at[who]


class _World:
    """People carrying objects between places; records where each object has been."""

    def __init__(self, rng, people):
        self.rng, self.people = rng, people
        self.at, self.holder, self.obj_at, self.trail, self.facts = {}, {}, {}, {}, []

    def _object_moved(self, obj, where):
        self.obj_at[obj] = where
        trail = self.trail.setdefault(obj, [])
        if not trail or trail[-1] != where:
            trail.append(where)

    def step(self):
        rng = self.rng
        who = rng.choice(self.people)
        held = [o for o, h in self.holder.items() if h == who]
        free = [o for o in OBJECTS if o not in self.holder and self.obj_at.get(o, self.at.get(who)) == self.at.get(who)]
        if who in self.at and free and rng.random() < 0.35:
            obj = rng.choice(free)
            self.holder[obj] = who
            self._object_moved(obj, self.at[who])
            self.facts.append(f"{who} {rng.choice(GET)} the {obj} there.")
        elif held and rng.random() < 0.2:
            obj = rng.choice(held)
            del self.holder[obj]
            self.facts.append(f"{who} {rng.choice(DROP)} the {obj}.")
        else:
            where = rng.choice([p for p in PLACES if p != self.at.get(who)])
            self.at[who] = where
            for obj in held:
                self._object_moved(obj, where)
            self.facts.append(_move(rng, who, where))


def qa2(rng: random.Random):
    """Two supporting facts: where is an object (carried by someone who then moved)."""
    while True:
        world = _World(rng, rng.sample(PEOPLE, rng.randint(2, 4)))
        for _ in range(rng.randint(8, 14)):
            world.step()
        movers = [o for o, trail in world.trail.items() if len(trail) >= 2]
        if movers:
            obj = rng.choice(sorted(movers))
            return world.facts, f"Where is the {obj}?", world.obj_at[obj]


def qa3(rng: random.Random):
    """Three supporting facts: where was an object before it reached a place."""
    while True:
        world = _World(rng, rng.sample(PEOPLE, rng.randint(2, 3)))
        for _ in range(rng.randint(10, 18)):
            world.step()
        options = [(obj, k) for obj, trail in world.trail.items() for k in range(1, len(trail))
                   if trail.count(trail[k]) == 1]
        if options:
            obj, k = rng.choice(sorted(options))
            trail = world.trail[obj]
            return world.facts, f"Where was the {obj} before the {trail[k]}?", trail[k - 1]


def qa4(rng: random.Random):
    """Two-argument relations: two places around a centre; ask one of them back."""
    centre, first, second = rng.sample(PLACES, 3)
    d1, d2 = rng.sample(sorted(OPPOSITE), 2)
    facts = []
    for place, d in ((first, d1), (second, d2)):
        if rng.random() < 0.5:
            facts.append(f"The {place} is {d} of the {centre}.")
        else:
            facts.append(f"The {centre} is {OPPOSITE[d]} of the {place}.")
    rng.shuffle(facts)
    answer, d = rng.choice([(first, d1), (second, d2)])
    if rng.random() < 0.5:
        return facts, f"What is {d} of the {centre}?", answer
    return facts, f"What is the {centre} {OPPOSITE[d]} of?", answer


def qa5(rng: random.Random):
    """Three-argument relations: who gave what to whom (each object changes hands once)."""
    people = rng.sample(GIVERS, rng.randint(3, 4))
    at = {p: rng.choice(PLACES) for p in people}
    facts = [_move(rng, p, at[p]) for p in people]
    gives = []
    for obj in rng.sample(OBJECTS, rng.randint(1, 3)):
        giver, taker = rng.sample(people, 2)
        facts.append(f"{giver} {rng.choice(GET)} the {obj} there.")
        if at[taker] != at[giver]:
            at[taker] = at[giver]
            facts.append(_move(rng, taker, at[giver]))
        facts.append(f"{giver} {rng.choice(GIVE)} the {obj} to {taker}.")
        gives.append((giver, obj, taker))
        for _ in range(rng.randint(0, 2)):
            who = rng.choice(people)
            at[who] = rng.choice([p for p in PLACES if p != at[who]])
            facts.append(_move(rng, who, at[who]))
    giver, obj, taker = rng.choice(gives)
    kinds = ["giver", "taker", "received"]
    if sum(g == giver and t == taker for g, _, t in gives) == 1:
        kinds.append("object")
    kind = rng.choice(kinds)
    if kind == "giver":
        return facts, f"Who gave the {obj}?", giver
    if kind == "taker":
        return facts, f"Who did {giver} give the {obj} to?", taker
    if kind == "received":
        return facts, f"Who received the {obj}?", taker
    return facts, f"What did {giver} give to {taker}?", obj


GENERATORS = {"qa1": qa1, "qa2": qa2, "qa3": qa3, "qa4": qa4, "qa5": qa5}


def story(qa: str, seed) -> tuple[list[str], str, str]:
    return GENERATORS[qa](random.Random(seed))
