"""Built-in learners, written against the public learner API (see docs/design.md)."""
from agents import dqn  # noqa: F401  (registration)
from agents import classifier  # noqa: F401,E402  (registration)
from agents import regressor  # noqa: F401,E402  (registration)
from agents import sb3  # noqa: F401,E402  (registration; stable_baselines3 is imported only when used)
