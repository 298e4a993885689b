"""One file per attention method; a sparse method's file only builds its pattern (see attention/method.py).

To add a method: copy streaming.py (a fixed pattern) or flexprefill.py (a pattern chosen from q, k; sample.py has a
special fused GPU path), give it a new `name`, and add its module to BUILTINS and its name to BUILTIN_NAMES.
"""
BUILTINS = (
    "attention.methods.dense",
    "attention.methods.eager",
    "attention.methods.sample",
    "attention.methods.bigbird",
    "attention.methods.streaming",
    "attention.methods.h2o",
    "attention.methods.oracle_topk",
    "attention.methods.minference",
    "attention.methods.flexprefill",
    "attention.methods.xattention",
)
# every name the built-ins register, known without importing them (they import torch): an unknown method is
# refused at once; tests/test_registry.py keeps this equal to what the modules register
BUILTIN_NAMES = ("dense", "flash-attn", "eager", "sample", "bigbird", "streaming", "h2o", "oracle-topk", "minference",
                 "flexprefill", "xattention")
