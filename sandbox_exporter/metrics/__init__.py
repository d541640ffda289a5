"""Every metric on one injected CollectorRegistry (families.py), and the exposition of a
single run for `/probe` (single_run.py)."""
