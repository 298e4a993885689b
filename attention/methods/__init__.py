"""One file per attention method; a sparse method's file only builds its pattern (see attention/method.py).

To add a method: copy streaming.py (a fixed pattern) or sample.py (a pattern chosen from q, k), give it a new
`name`, and add its module to BUILTINS.
"""
BUILTINS = (
    "attention.methods.dense",
    "attention.methods.eager",
    "attention.methods.sample",
    "attention.methods.bigbird",
    "attention.methods.streaming",
    "attention.methods.h2o",
    "attention.methods.oracle_topk",
)
