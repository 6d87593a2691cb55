"""Local stand-ins for the external APIs (OpenAI, the series data API), with injectable faults."""
from core.simulators.faults import FaultState, parse_fail_spec
from core.simulators.openai_sim import openai_app, start_openai_simulator
from core.simulators.series_sim import series_app, start_series_simulator
from core.simulators.server import SimulatorControl, SimulatorServer

__all__ = ["FaultState", "SimulatorControl", "SimulatorServer", "openai_app", "parse_fail_spec",
           "series_app", "start_openai_simulator", "start_series_simulator"]
