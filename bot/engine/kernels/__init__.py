"""GPU kernels for the batched engine (Triton, compiled at first use on the GPU; never imported on the CPU path)."""
