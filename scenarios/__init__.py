"""Built-in scenarios, written with the same public API a user uses (``crl.Scenario``,
``crl.RLTask``, ``crl.register_scenario``), so each doubles as an example."""
from scenarios import atari, gym_control  # noqa: F401  (registration)
from scenarios import plasticity, sequential_atari, split  # noqa: F401,E402  (registration)
from scenarios import incremental_cifar, slowly_changing_regression  # noqa: F401,E402  (registration)
from scenarios import minatar  # noqa: F401,E402  (registration; the minatar package is imported only when used)
from scenarios import avalanche  # noqa: F401,E402  (registration; avalanche is imported only when used)
