"""Test kit: recorded data paths (bundled or shared) and the bot as a subprocess."""
