"""The APScheduler daemon that emits the periodic sweeps."""
