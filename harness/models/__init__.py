"""Models: loading (embedded GGUF, folders, hub cache), random-weight architectures for timing, one model split
over GPUs (device_map.py) and the chunked long prefill."""
