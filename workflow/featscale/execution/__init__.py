"""How jobs run: logging, threads, signals, devices, GPU claims and resumable checkpoints."""
