"""Token-exact prompt rendering shared by the tasks.

Prompts are assembled from token-id pieces (never re-tokenised as one string), so the length is exact.
"""
import bisect

_SLOT = "\u2063SLOT\u2063"
# A model without a chat template (a base model, e.g. Gemma-3-270M's GGUF) continues the document's format
# instead of answering; a completion cue makes it answer.
ANSWER_CUE = "\nAnswer:"


def chat_frame(tokenizer) -> tuple[list[int], list[int]]:
    """Token ids before and after the user message: the chat template when the tokenizer has one."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": _SLOT}], add_generation_prompt=True,
                                             tokenize=False)
        before, after = text.split(_SLOT)
        return tokenizer(before, add_special_tokens=False)["input_ids"], tokenizer(after, add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos, []


def text_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def assemble(tokenizer, target: int, head: str, filler_ids: list[int], inserts: list[tuple[float, str]],
             tail: str) -> list[int]:
    """Prompt of exactly `target` tokens: frame + head + filler (with texts inserted at depths 0..1) + tail.

    Inserts land on the filler token nearest their depth; filler is cut from its end to fit.
    """
    return assemble_at(tokenizer, target, head, filler_ids, inserts, tail)[0]


def assemble_at(tokenizer, target: int, head: str, filler_ids: list[int], inserts: list[tuple[float, str]],
                tail: str, breaks: list[int] | None = None) -> tuple[list[int], list[int]]:
    """assemble(), also giving each insert's first token index in the prompt (in depth order).

    With `breaks` (sorted filler positions after a sentence end), an insert at a depth strictly inside (0, 1)
    moves back to the nearest break, as the original needle-in-a-haystack test does; the length stays exact.
    """
    before, after = chat_frame(tokenizer)
    if not getattr(tokenizer, "chat_template", None) and not tail.rstrip().endswith("Answer:"):
        tail += ANSWER_CUE
    head_ids, tail_ids = text_ids(tokenizer, head), text_ids(tokenizer, tail)
    insert_ids = [(depth, text_ids(tokenizer, text)) for depth, text in inserts]
    fixed = len(before) + len(head_ids) + len(tail_ids) + len(after) + sum(len(ids) for _, ids in insert_ids)
    room = target - fixed
    if room < 0:
        raise ValueError(f"the prompt needs {fixed} tokens without filler, more than the requested {target}")
    if room > len(filler_ids):
        raise ValueError(f"not enough filler text for {target} tokens (have {len(filler_ids)} filler tokens)")
    body, start, positions = [], 0, []
    for depth, ids in sorted(insert_ids, key=lambda item: item[0]):
        cut = round(depth * room)
        if breaks and 0 < depth < 1:
            below = bisect.bisect_right(breaks, cut) - 1
            cut = breaks[below] if below >= 0 and breaks[below] >= start else cut
        body += filler_ids[start:cut]
        positions.append(len(before) + len(head_ids) + len(body))
        body += ids
        start = cut
    body += filler_ids[start:room]
    return before + head_ids + body + tail_ids + after, positions
