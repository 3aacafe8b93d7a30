"""Last step of the flow: announce a study's outcome on EventBridge."""
