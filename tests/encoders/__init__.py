"""Tests of the encoders: model maths in numpy."""
