"""Built-in learners, written against the public learner API (see docs/design.md)."""
from agents import dqn  # noqa: F401  (registration)
from agents import classifier  # noqa: F401,E402  (registration)
