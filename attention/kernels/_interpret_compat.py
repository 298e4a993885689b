"""Triton 3.6's CPU interpreter turns a runtime loop bound into a Python int with int(array), where the array
has shape (1,); NumPy >= 2.4 refuses that. Only under TRITON_INTERPRET=1, re-patch __index__ to take .item().
"""
import os


def apply() -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        return
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor
    if getattr(original, "_index_fixed", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._index_fixed = True
    interpreter._patch_lang_tensor = patched
