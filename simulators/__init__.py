"""StreetSense device simulators: a town full of devices without hardware.

Main entry points (see ``simulators/README.md``)::

    from simulators.scenario import load_scenario        # Scenario (YAML), .graph = StreetGraph
    from simulators.fleet import build_fleet             # Fleet.devices: list[DeviceSpec]
    from simulators.engine import Simulation             # messages + truth in simulated-time order
    from simulators.runner import run                    # pacing into a Publisher
    from simulators.publisher import MqttPublisher       # paho-mqtt 2.x, MQTT v5
    from simulators.truth import TruthWriter, insert_truth
    from simulators.cli import simulate_command          # `streetsense simulate`
    from simulators.bench import bench_simulator
"""
