"""Probing: the lifecycle runner and where backend calls run, one prober per target,
the collector of orphans, the scheduler, the set of probers a config makes."""
