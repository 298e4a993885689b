"""Methods, one file each. Importing this package registers the peers below (the registry imports every
top-level module of attention/, this package included)."""
from attention.methods import flexprefill, minference, xattention  # noqa: F401
