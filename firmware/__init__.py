"""Simulated M4 real-time cores: inter-core protocol (core side), A/B model slots, TFLM runtime."""
