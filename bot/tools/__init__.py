"""Developer tools: the benchmark, kernel tuning, the demo-model writer (never imported by the running bot)."""
