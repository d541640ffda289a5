"""Probe images made on this machine, for engines that cannot reach a registry."""
