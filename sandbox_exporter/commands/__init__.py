"""The one-shot commands: bench, probe, gc."""
