"""`python -m harness.cli ...` (what torchrun starts on every rank): the same as `sampleattn ...`."""
import sys

from harness.cli import main

sys.exit(main())
