"""The pass (observe, plan, apply) and the watch that repeats it; the plan memo."""
