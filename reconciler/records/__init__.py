"""What a pass leaves on disk for people: state.json, the workflow logs, the summary's model."""
