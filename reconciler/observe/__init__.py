"""The actual side: checkpoints, eval logs, and their merge with scheduler and journal."""
