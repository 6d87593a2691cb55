import click


@click.group("simulate")
def simulate_group() -> None:
    """Local simulators of the external APIs, for tests, demos and development."""


commands = [simulate_group]
