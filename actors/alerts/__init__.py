"""Alerts: rules read from a TOML file, evaluated by the scheduler's leader every 30 s, told to
a webhook and by e-mail when they fire, again while they fire, and when they resolve."""
from actors.alerts.channels import ChannelError, Channels, load_channels  # noqa: F401
from actors.alerts.conditions import record_panel_check  # noqa: F401
from actors.alerts.evaluate import Evaluation, deliver_alert, evaluate_alerts  # noqa: F401
from actors.alerts.rules import Rule, Rules, RulesError, load_rules  # noqa: F401
