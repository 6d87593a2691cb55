"""Local stand-ins for the external APIs (OpenAI, the series data API), with injectable faults."""
from fleet.simulators.faults import FaultState, parse_fail_spec
from fleet.simulators.openai_sim import openai_app, start_openai_simulator
from fleet.simulators.series_sim import series_app, start_series_simulator
from fleet.simulators.server import SimulatorControl, SimulatorServer

__all__ = ["FaultState", "SimulatorControl", "SimulatorServer", "openai_app", "parse_fail_spec",
           "series_app", "start_openai_simulator", "start_series_simulator"]
