"""The inference loop fused in C for a CPU: `fused` (build, load, call) and `loop.c`."""
