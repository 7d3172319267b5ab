"""What each inv task does: chains the stages, top-down, no logic of its own."""
