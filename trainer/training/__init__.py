"""Fit as named steps, with the checkpoints and preemption backups that let a run resume."""
