import click


@click.group("jobs")
def jobs_group() -> None:
    """Job logs, dead letters and cleanup."""


commands = [jobs_group]
