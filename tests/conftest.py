"""Suite-wide settings: hypothesis runs without wall-clock deadlines on a shared 2-core machine.

Generation speed and per-example time depend on what else the machine is doing; they say
nothing about correctness, so they must not fail a run.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "suite", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("suite")
