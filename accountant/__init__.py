"""dpsql component."""
