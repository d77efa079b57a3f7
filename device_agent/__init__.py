"""The device agent for the A7 application core."""
